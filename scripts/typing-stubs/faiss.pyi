# faiss' own SWIG stubs know only base classes (Index has no nlist, downcast_index returns object),
# so every real use would need a cast; babelsearch reads faiss as untyped instead.
from typing import Any

def __getattr__(name: str) -> Any: ...
