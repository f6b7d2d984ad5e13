"""Search strategies, one module (or package) each, behind the interface of ``nas.strategies.base``."""
