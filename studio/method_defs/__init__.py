"""The method entries. Each module registers its methods with studio.methods.register on import."""

from studio.method_defs import full, lora  # noqa: F401
