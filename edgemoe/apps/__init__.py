"""The applications on the Python API: the `edgemoe` command, the terminal chat and the OpenAI-compatible server."""
