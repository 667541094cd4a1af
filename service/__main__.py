"""``python -m service``: entry point of the HTTP service and of local batches.

The REST service and the batch command are not built yet (issue 4, after the model of issue 3); until then
this says so and exits with status 2 rather than pretending to serve.
"""

import sys

MESSAGE = (
    "tbseg: the service is not built yet: it needs the trained model in models/ (issue 3) and the\n"
    "ONNX Runtime service itself (issue 4). `make test` runs what exists today.\n"
)


def main() -> int:
    sys.stderr.write(MESSAGE)
    return 2


if __name__ == "__main__":
    sys.exit(main())
