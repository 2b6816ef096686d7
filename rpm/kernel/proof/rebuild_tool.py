"""The pack's own kernel config code (rpm/kernel/rebuild-kernel-srpm.py),
loaded as a module: the proof merges and reads configs exactly as the pack does."""
import importlib.util
import os

REBUILD = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                       "rebuild-kernel-srpm.py")


def load():
    spec = importlib.util.spec_from_file_location("rebuild_kernel_srpm", REBUILD)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod
