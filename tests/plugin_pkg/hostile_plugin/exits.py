import sys

sys.exit("a plugin that exits at import")
