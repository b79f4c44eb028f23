from environments.preference.env import PreferenceMathEnvironment

__all__ = ["PreferenceMathEnvironment"]
