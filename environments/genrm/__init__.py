from environments.genrm.env import GenRMJudgeEnvironment

__all__ = ["GenRMJudgeEnvironment"]
