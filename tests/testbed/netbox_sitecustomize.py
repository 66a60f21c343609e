"""NetBox's ``sitecustomize`` in the tests (tests/testbed/netbox.py puts it on NetBox's path).

NetBox's settings.py ends with ``from .local_settings import *``. In a real installation the file
is copied next to settings.py; here ``netbox.local_settings`` is the file SIDECAR_TEST_LOCAL_SETTINGS
names (the example as written), so the cached NetBox environment is never changed. Without the
variable there is no local_settings module, as in a stock installation.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
from collections.abc import Sequence
from types import ModuleType


class _LocalSettings(importlib.abc.MetaPathFinder):
    def find_spec(self, name: str, path: Sequence[str] | None = None,
                  target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        file = os.environ.get("SIDECAR_TEST_LOCAL_SETTINGS")
        if name != "netbox.local_settings" or not file:
            return None
        return importlib.util.spec_from_file_location(name, file)


sys.meta_path.insert(0, _LocalSettings())
