"""HTTP layer (FastAPI): parses requests, calls the engine once, returns schemas or images."""
