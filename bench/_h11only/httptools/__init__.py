# First on PYTHONPATH for the benchmark's "h11" servers: uvicorn's http="auto"
# then falls back to its pure-Python h11 parser even where httptools is installed.
raise ImportError("httptools is hidden by the benchmark (h11 run)")
