"""(in progress) operator module: see the open issue for this operator."""
__all__: list[str] = []
