"""Extension modules of the CPU backend (imported by the root setup.py).

Placeholder until the Cython backend lands: no extension yet."""


def extensions(root):
    return []
