"""Line-protocol harness for protocol.negentropy, speaking what hoytech/negentropy's
``test/js/harness.js`` speaks, so the reference test drivers can pair it with theirs.

Reads from stdin: ``item,<timestamp>,<hex id>``, ``seal``, ``initiate``, ``msg,<hex>``.
Writes: ``msg,<hex>`` (the next message), ``have,<hex id>`` / ``need,<hex id>`` (client
only) and ``done`` (client finished). ``FRAMESIZELIMIT`` in the environment sets the
frame size limit. Any error ends the process with a traceback and a non-zero status,
as the reference harnesses do.

Run as a script: ``python tests/interop/negentropy_harness.py``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

# Run as a script, so the project is not necessarily importable: put the repo root first.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from protocol.negentropy import Negentropy, NegentropyStorageVector


def main() -> int:
    frame_size_limit = int(os.environ.get("FRAMESIZELIMIT") or 0)
    storage = NegentropyStorageVector()
    ne: Negentropy | None = None
    out = sys.stdout

    def emit(line: str) -> None:
        out.write(line + "\n")
        out.flush()

    for raw in sys.stdin:
        line = raw.strip()
        if not line:
            continue
        fields = line.split(",")
        cmd = fields[0]
        if cmd == "item":
            if len(fields) != 3:
                raise SystemExit(f"wrong number of fields: {line!r}")
            storage.insert(int(fields[1]), bytes.fromhex(fields[2]))
        elif cmd == "seal":
            storage.seal()
            ne = Negentropy(storage, frame_size_limit)
        elif cmd == "initiate":
            if ne is None:
                raise SystemExit("initiate before seal")
            query = ne.initiate()
            if frame_size_limit and len(query) > frame_size_limit:
                raise SystemExit("frameSizeLimit exceeded")
            emit(f"msg,{query.hex()}")
        elif cmd == "msg":
            if ne is None:
                raise SystemExit("msg before seal")
            incoming = bytes.fromhex(fields[1] if len(fields) > 1 else "")
            if ne.is_initiator:
                answer, have_ids, need_ids = ne.reconcile_client(incoming)
                for id_ in have_ids:
                    out.write(f"have,{id_.hex()}\n")
                for id_ in need_ids:
                    out.write(f"need,{id_.hex()}\n")
                if answer is None:
                    emit("done")
                    continue
            else:
                answer = ne.reconcile(incoming)
            if frame_size_limit and len(answer) > frame_size_limit:
                raise SystemExit("frameSizeLimit exceeded")
            emit(f"msg,{answer.hex()}")
        else:
            raise SystemExit(f"unknown cmd: {cmd}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
