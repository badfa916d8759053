"""Python file objects over a stack: ``uringstack.open``, ``uringstack.FileIO`` and aiofiles' ``os``."""
