"""Make the collection importable as ansible_collections.bluemind_ha.cluster when
pytest runs from the checkout (make venv links .collections to it)."""
import sys
from pathlib import Path

COLLECTIONS = Path(__file__).resolve().parents[2] / ".collections"
if COLLECTIONS.is_dir() and str(COLLECTIONS) not in sys.path:
    sys.path.insert(0, str(COLLECTIONS))
