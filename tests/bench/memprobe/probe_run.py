"""probe_run.py SCRIPT ARGS...: run SCRIPT as __main__ with the peak-memory
report of sitecustomize.py armed, also when SCRIPT runs with python -S (which
skips site and sitecustomize). The benchmark's memory runs only."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import peakmem  # noqa: E402,F401 (arms the report)

script = sys.argv[1]
sys.argv = sys.argv[1:]
sys.path[0] = os.path.dirname(os.path.abspath(script))
with open(script) as handle:
    code = compile(handle.read(), script, "exec")
exec(code, {"__name__": "__main__", "__file__": script})
