"""Start PEFT Studio: python app.py [--host 127.0.0.1] [--port 7860]."""

import sys

from studio.ui.launch import main

if __name__ == "__main__":
    sys.exit(main())
