"""filesecrets: the kit's reference secret provider (see driver.py)."""
