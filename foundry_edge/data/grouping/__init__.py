"""Host grouping in numpy, in one place: (B, N, 3) clouds -> G centres and K neighbours each.

    exact.py     FPS over every point, kNN over every point (the paper's grouping); any point count
    scalable.py  FPS over octree-stratified candidates, k-d tree kNN: large scenes (2^16 to 2^18 points)

Each is the twin of the in-graph grouping in foundry_edge.models (grouping.py, scalable_grouping.py):
host and graph pick the same centres and neighbourhoods. foundry_edge.data.preprocess calls the one a
model's preprocessing names.
"""
