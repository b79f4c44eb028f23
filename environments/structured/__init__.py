from environments.structured.env import StructuredOutputEnvironment

__all__ = ["StructuredOutputEnvironment"]
