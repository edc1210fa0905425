"""The method entries. Each module registers its methods with studio.methods.register on import.

The import order is the order the UI and ``python -m studio methods`` list them in.
"""

# isort: off
from studio.method_defs import full, freeze, lora, adalora, ia3, prompts, adapter, bitfit  # noqa: F401
from studio.method_defs import peft_lowrank, peft_shared, peft_rotations  # noqa: F401
