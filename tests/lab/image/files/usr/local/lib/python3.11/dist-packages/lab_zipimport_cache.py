"""Lab only (in the lab's VM image, loaded by lab-zipimport-cache.pth next to it;
never installed by a role): a compile cache for code that Python imports from zip archives.

Ansible runs each module from a zip of its module_utils, and Python cannot keep
bytecode for a zip: every task compiled ansible.module_utils.basic and its
imports again, about 1.8 s of the 2.1 s a module took in a guest under software
emulation. This caches the compiled code by the source's hash, under a root-only
directory; what runs is what the same source compiles to, only sooner. A process
that cannot read or write the cache compiles as before.
"""
import zipimport

CACHE = "/var/cache/lab-zipimport"
_compile_source = zipimport._compile_source


def _with_filename(code, filename):
    consts = tuple(_with_filename(c, filename) if isinstance(c, type(code)) else c for c in code.co_consts)
    return code.replace(co_filename=filename, co_consts=consts)


def _cached_compile(pathname, source):
    import hashlib
    import marshal
    import os

    data = source if isinstance(source, bytes) else source.encode()
    path = os.path.join(CACHE, hashlib.sha256(data).hexdigest())
    try:
        with open(path, "rb") as cached:
            return _with_filename(marshal.load(cached), pathname)
    except (OSError, EOFError, ValueError, TypeError):
        pass
    code = _compile_source(pathname, source)
    try:
        os.makedirs(CACHE, mode=0o700, exist_ok=True)
        partial = f"{path}.{os.getpid()}"
        with open(partial, "wb") as out:
            marshal.dump(code, out)
        os.replace(partial, path)
    except OSError:
        pass
    return code


zipimport._compile_source = _cached_compile
