"""Clustering: spherical / Euclidean k-means with FAISS (GPU, CPU) and torch backends (DnC stage 2)."""

from lightning_ssl.cluster.kmeans import (
    KMeansResult,
    available_backends,
    distributed_kmeans,
    kmeans,
)

__all__ = ["KMeansResult", "available_backends", "distributed_kmeans", "kmeans"]
