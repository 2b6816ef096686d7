"""vif-rules core: per-VIF isolation rules for XenServer dom0.

Valid on every dom0 Python, 2.4 to 3.x: see tests/test_py24_syntax.py for
the constructs that are banned here.
"""

VERSION = "1.0.0"
# The plugin API version a controller checks with get_version.
API_VERSION = "1.0"
