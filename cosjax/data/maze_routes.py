"""Maze routes (multi-answer): a 4 x 4 maze with loops and two or three shortest routes; draw one.

Sizes: 32 x 32 RGB, 9 frames (4k + 1), the shipped maze's look (`lattice.LATTICE_4`: 8-pixel cells,
one cell per toy token, 1-pixel walls, 4-pixel markers and path band). A perfect maze is carved,
then 1-3 random interior walls are removed to make loops. Start and goal are chosen so that the
shortest path between them has exactly 2 or 3 routes and each route has at least one inner cell
no other route uses (its distinguishing cells), so "which route is drawn" is readable in pixels.
The video draws one of the routes (chosen by the seed) one move at a time, like `maze`: frame k
shows the first round(k * moves / 8) moves. The prompt is the maze prompt: any shortest path is a
right answer, and the model must draw exactly one of them.

In-domain routes take 3-6 moves; held-out routes take 7 or more (longest seen: ~12), a length
never seen in training.

solution: "path" (the drawn route), "routes" (every shortest route, the drawn one included, as cell
lists), "moves", "right"/"down" (walls), "answer_boxes" (per route, the core pixel boxes of its inner
cells) and "ink" (the path colour): what `cosjax.analysis.phenomena` reads to count candidates.
"""

from __future__ import annotations

import numpy as np

from cosjax.data.case import FRAMES, Case, progress, rng_for
from cosjax.data.lattice import LATTICE_4, PATH, answer_boxes
from cosjax.data.prompts import MAZE, prompt_id
from cosjax.data.render import last_frame

NAME = "maze_routes"
LATTICE = LATTICE_4
N = LATTICE.n
IN_DOMAIN_MOVES = (3, 6)
HELD_OUT_MOVES = (7, 2 * N * N)
ROUTES = (2, 3)  # how many shortest routes a case has
EXTRA_WALLS = (1, 3)  # interior walls removed from the perfect maze


def distinguishing(routes) -> list[tuple[set, set]]:
    """Per route, (inner cells, wall crossings) that no other route of the list has."""
    elements = [LATTICE.path_elements([tuple(c) for c in r]) for r in routes]
    out = []
    for i, (cells, links) in enumerate(elements):
        other_cells = set().union(*(e[0] for j, e in enumerate(elements) if j != i))
        other_links = set().union(*(e[1] for j, e in enumerate(elements) if j != i))
        out.append((cells - other_cells, links - other_links))
    return out


def _loops(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    right, down = LATTICE.carve(rng)
    closed = LATTICE.closed_links(right, down)
    extra = int(rng.integers(EXTRA_WALLS[0], EXTRA_WALLS[1] + 1))
    for i in rng.permutation(len(closed))[:extra]:
        LATTICE.set_open(right, down, *closed[int(i)])
    return right, down


def generate(seed: int, held_out: bool = False) -> Case:
    """A maze-routes case: >= 2 shortest routes, one of them drawn (see the module docstring)."""
    rng = rng_for(NAME, seed, held_out)
    lo, hi = HELD_OUT_MOVES if held_out else IN_DOMAIN_MOVES
    while True:
        right, down = _loops(rng)
        start = (int(rng.integers(N)), int(rng.integers(N)))
        dist = LATTICE.distances(right, down, start)
        goals = sorted(cell for cell, d in dist.items() if lo <= d <= hi)
        if not goals:
            continue
        goal = goals[int(rng.integers(len(goals)))]
        routes = LATTICE.shortest_paths(right, down, start, goal, cap=ROUTES[1] + 1)
        if not ROUTES[0] <= len(routes) <= ROUTES[1]:
            continue
        if all(cells for cells, _ in distinguishing(routes)):
            break
    path = routes[int(rng.integers(len(routes)))]
    moves = len(path) - 1
    video = np.stack([LATTICE.render(right, down, path, m) for m in progress(moves, FRAMES)])
    solution = {
        "path": [list(cell) for cell in path],
        "routes": [[list(cell) for cell in r] for r in routes],
        "moves": moves,
        "right": right.tolist(),
        "down": down.tolist(),
        "answer_boxes": [answer_boxes(LATTICE, r) for r in routes],
        "ink": list(PATH),
    }
    return Case(NAME, seed, held_out, MAZE, prompt_id(MAZE), video, solution)


def route_scores(case: Case, video) -> list[float]:
    """Per route r: IoU(drawn, r) x cover(r) / (1 + others(r)), read from the last frame.

    IoU: of the painted inner cells and wall crossings with r's (as `maze.score`);
    cover: the fraction of r's distinguishing elements (cells and crossings no other route has)
    that are painted; others: how many other routes have at least half of their distinguishing
    elements painted. One route drawn exactly scores 1 for it; two routes drawn score below 0.5
    for both (IoU < 1, halved); a blur of two routes (neither crisp) has cover 0.
    """
    frame = last_frame(video)
    routes = [[tuple(c) for c in r] for r in case.solution["routes"]]
    drawn = LATTICE.drawn(frame, routes[0])  # every route shares start and goal
    cells, links = drawn
    own = distinguishing(routes)
    hit = [len(oc & cells) + len(ol & links) for oc, ol in own]
    size = [len(oc) + len(ol) for oc, ol in own]
    out = []
    for i, route in enumerate(routes):
        others = sum(2 * hit[j] >= size[j] for j in range(len(routes)) if j != i)
        out.append(LATTICE.iou(drawn, route) * hit[i] / size[i] / (1 + others))
    return out


def score(case: Case, video) -> float:
    """The best route's score (`route_scores`): 1.0 only when exactly one shortest route is drawn.

    Solved (>= 0.5, the experiments' threshold) means one route is drawn nearly whole and no second
    route is half drawn: a superposition of two routes, a wrong route or nothing is unsolved.
    """
    return float(max(route_scores(case, video)))


def chosen_route(case: Case, video, success: float = 0.5) -> int:
    """Index into solution["routes"] of the route the video is solved with, -1 if it is unsolved."""
    scores = route_scores(case, video)
    best = int(np.argmax(scores))
    return best if scores[best] >= success else -1
