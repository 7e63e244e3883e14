"""Stand-in for the pip bootstrap script ansible-test downloads (get-pip.py).

Not a copy of get-pip: ansible-test runs the script it caches as
~/.ansible/test/cache/get_pip_<version>.py inside each new virtual environment it
makes, with pip install arguments. That host is out of reach here, so this script
does the same job from what is local: Python's bundled pip (ensurepip), then a pip
install of the exact packages ansible-test asked for (pip==<version>) from PyPI.
"""
import subprocess
import sys

ARGS = [a for a in sys.argv[1:] if a not in ("--no-setuptools", "--no-wheel")]
subprocess.check_call([sys.executable, "-m", "ensurepip", "--default-pip"], stdout=subprocess.DEVNULL)
subprocess.check_call([sys.executable, "-m", "pip", "install", "--upgrade", *ARGS])
