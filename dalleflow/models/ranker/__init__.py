from dalleflow.models.ranker.clip import ClipRanker

__all__ = ["ClipRanker"]
