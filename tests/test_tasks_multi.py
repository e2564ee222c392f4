"""The issue-14 task families (maze_routes: several valid answers; maze_long: a long unique path):
registry, determinism, layout, generator guarantees, scorers on right / wrong / double answers."""

from __future__ import annotations

import json
from collections import deque

import numpy as np
import pytest
from test_tasks import perturb, with_last

from cosjax import data as D
from cosjax.data import maze, maze_long, maze_routes, tasks
from cosjax.data.lattice import LATTICE_4, PATH

NAMES = sorted(tasks.REASONING_FAMILIES)
MODULES = {"maze_routes": maze_routes, "maze_long": maze_long}
SEEDS = range(12)


def walls(case):
    return np.asarray(case.solution["right"]), np.asarray(case.solution["down"])


def draw(case, *routes) -> np.ndarray:
    """uint8 [32, 32, 3]: the case's maze with each given route drawn whole (its band pixels)."""
    lat = MODULES[case.family].LATTICE
    right, down = walls(case)
    frames = [lat.render(right, down, [tuple(c) for c in r], len(r) - 1) for r in routes]
    out = frames[0].copy()
    for f in frames[1:]:
        band = (f == PATH).all(-1)
        out[band] = PATH
    return out


def count_shortest(right, down, n, start, goal) -> tuple[int, int]:
    """(length, number) of shortest start -> goal paths by BFS path counting (independent of lattice)."""

    def open_(a, b):
        if a[0] == b[0]:
            return right[a[0], min(a[1], b[1])]
        return down[min(a[0], b[0]), a[1]]

    dist, ways = {start: 0}, {start: 1}
    queue = deque([start])
    while queue:
        a = queue.popleft()
        for dr, dc in ((0, 1), (1, 0), (0, -1), (-1, 0)):
            b = (a[0] + dr, a[1] + dc)
            if not (0 <= b[0] < n and 0 <= b[1] < n) or not open_(a, b):
                continue
            if b not in dist:
                dist[b], ways[b] = dist[a] + 1, 0
                queue.append(b)
            if dist[b] == dist[a] + 1:
                ways[b] += ways[a]
    return dist[goal], ways[goal]


def test_registry_ships_the_reasoning_families():
    # what the demo and the shipped model use; the 4 x 4 unique maze stays opt-in
    assert sorted(tasks.FAMILIES) == sorted(D.FAMILIES) == ["maze_long", "maze_routes", "move", "pattern"]
    assert NAMES == ["maze_long", "maze_routes"]
    assert sorted(tasks.OTHER_FAMILIES) == ["arrows", "maze"]
    assert set(tasks.ALL_FAMILIES) == set(tasks.FAMILIES) | set(tasks.OTHER_FAMILIES)
    for name in NAMES:
        assert tasks.family(name).generate is MODULES[name].generate
    with pytest.raises(KeyError, match="maze_routes"):
        tasks.family("nope")


@pytest.mark.parametrize("name", NAMES)
def test_deterministic(name):
    a, b = tasks.generate(name, 5), tasks.generate(name, 5)
    np.testing.assert_array_equal(a.video, b.video)
    assert a.solution == b.solution and a.prompt == b.prompt
    assert not np.array_equal(a.video, tasks.generate(name, 6).video)
    held = tasks.generate(name, 5, held_out=True)
    assert not np.array_equal(a.video, held.video) and held.held_out


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("held_out", [False, True])
def test_layout_and_ground_truth(name, held_out):
    for seed in SEEDS:
        case = tasks.generate(name, seed, held_out)
        assert case.video.shape == (D.FRAMES, D.SIZE, D.SIZE, 3) and case.video.dtype == np.uint8
        assert D.FRAMES % 4 == 1  # 4k + 1 frames, as the toy's stride-4 latents need
        np.testing.assert_array_equal(case.first_frame, case.video[0])
        assert (case.family, case.seed, case.held_out) == (name, seed, held_out)
        assert D.PROMPTS[case.prompt_id] == case.prompt and case.prompt_id in tasks.family(name).prompt_ids
        json.dumps(case.solution)  # JSON-able, as metadata.json needs
        assert tasks.score(case, case.video) == 1.0
        assert tasks.score(case, case.final_frame) == 1.0
        assert tasks.score(case, perturb(case.video, seed)) >= 0.99
        still = np.repeat(case.first_frame[None], D.FRAMES, axis=0)
        assert tasks.score(case, still) <= 0.3
        assert tasks.score(case, perturb(still, seed)) <= 0.3


@pytest.mark.parametrize("name", NAMES)
def test_path_grows_frame_by_frame(name):
    for seed in SEEDS:
        case = tasks.generate(name, seed)
        ink = (case.video == PATH).all(-1).sum((1, 2))
        assert ink[0] == 0 and (np.diff(ink) >= 0).all() and ink[-1] > ink[len(ink) // 2] > 0


@pytest.mark.parametrize("name", NAMES)
def test_held_out_is_out_of_distribution(name):
    mod = MODULES[name]
    inside = [tasks.generate(name, s).solution["moves"] for s in range(200)]
    outside = [tasks.generate(name, s, held_out=True).solution["moves"] for s in range(200)]
    assert mod.IN_DOMAIN_MOVES[0] <= min(inside) and max(inside) <= mod.IN_DOMAIN_MOVES[1]
    assert mod.HELD_OUT_MOVES[0] <= min(outside) and max(outside) <= mod.HELD_OUT_MOVES[1]
    assert max(inside) < min(outside)


def test_maze_routes_has_two_or_more_shortest_routes():
    chosen = set()
    for held_out in (False, True):
        for seed in range(100):
            case = maze_routes.generate(seed, held_out)
            sol = case.solution
            routes = [[tuple(c) for c in r] for r in sol["routes"]]
            right, down = walls(case)
            length, number = count_shortest(right, down, maze_routes.N, routes[0][0], routes[0][-1])
            assert 2 <= number <= 3 and number == len(routes) == len(sol["answer_boxes"])
            assert length == sol["moves"] and len({tuple(r) for r in routes}) == len(routes)
            for route in routes:
                assert len(route) == length + 1 and (route[0], route[-1]) == (routes[0][0], routes[0][-1])
                for a, b in zip(route, route[1:], strict=False):
                    assert abs(a[0] - b[0]) + abs(a[1] - b[1]) == 1 and LATTICE_4.is_open(right, down, a, b)
            assert all(cells for cells, _ in maze_routes.distinguishing(routes))
            drawn = [tuple(c) for c in sol["path"]]
            assert drawn in routes
            chosen.add(routes.index(drawn))
    assert chosen >= {0, 1}  # the drawn route is not always the first one found


def test_lattice_4_is_the_shipped_maze_layout():
    for seed in range(6):
        case = maze.generate(seed)
        right, down = walls(case)
        path = [tuple(c) for c in case.solution["path"]]
        for k in range(len(path)):
            np.testing.assert_array_equal(
                LATTICE_4.render(right, down, path, k), maze.render(right, down, path, k)
            )


def test_maze_routes_scorer_right_wrong_double():
    wrong_seen = 0
    for seed in SEEDS:
        case = maze_routes.generate(seed)
        routes = case.solution["routes"]
        for i, route in enumerate(routes):  # any one route, drawn alone: solved with that route
            frame = draw(case, route)
            assert maze_routes.score(case, with_last(case, frame)) == 1.0
            assert maze_routes.chosen_route(case, frame) == i
        both = draw(case, routes[0], routes[1])  # two answers at once: unsolved
        assert maze_routes.score(case, with_last(case, both)) < 0.5
        assert maze_routes.chosen_route(case, both) == -1
        assert maze_routes.score(case, draw(case, *routes)) < 0.5
        blend = 0.5 * draw(case, routes[0]).astype(np.float32) + 0.5 * draw(case, routes[1])
        assert maze_routes.score(case, blend) < 0.5  # a superposition: neither route crisp
        on_routes = {tuple(c) for r in routes for c in r}
        off = [(r, c) for r in range(maze_routes.N) for c in range(maze_routes.N) if (r, c) not in on_routes]
        scatter = case.first_frame.copy()
        for cell in off[: case.solution["moves"] - 1]:
            y0, y1, x0, x1 = LATTICE_4.core_box(cell)
            scatter[y0 - 1 : y1 + 1, x0 - 1 : x1 + 1] = PATH
        assert maze_routes.score(case, with_last(case, scatter)) == 0.0
        wrong = wrong_route(case)
        if wrong is not None:  # a start -> goal route through a wall, avoiding every answer's own cells
            wrong_seen += 1
            right, down = walls(case)
            frame = LATTICE_4.render(right, down, wrong, len(wrong) - 1)
            assert maze_routes.score(case, with_last(case, frame)) == 0.0
    assert wrong_seen >= len(SEEDS) // 2


def wrong_route(case) -> list | None:
    """A shortest start -> goal path over the wall-less grid avoiding every route's distinguishing
    cells (so it crosses a wall or detours), or None if there is none."""
    routes = [[tuple(c) for c in r] for r in case.solution["routes"]]
    banned = set().union(*(cells for cells, _ in maze_routes.distinguishing(routes)))
    start, goal, n = routes[0][0], routes[0][-1], maze_routes.N
    parent = {start: None}
    queue = deque([start])
    while queue:
        a = queue.popleft()
        for dr, dc in ((0, 1), (1, 0), (0, -1), (-1, 0)):
            b = (a[0] + dr, a[1] + dc)
            if 0 <= b[0] < n and 0 <= b[1] < n and b not in parent and b not in banned:
                parent[b] = a
                queue.append(b)
    if goal not in parent:
        return None
    path = [goal]
    while parent[path[-1]] is not None:
        path.append(parent[path[-1]])
    path = path[::-1]
    return None if path in routes else path


def test_maze_long_is_unique_and_long():
    for held_out in (False, True):
        for seed in range(50):
            case = maze_long.generate(seed, held_out)
            path = [tuple(c) for c in case.solution["path"]]
            right, down = walls(case)
            length, number = count_shortest(right, down, maze_long.N, path[0], path[-1])
            assert number == 1 and length == case.solution["moves"] == len(path) - 1
            assert case.solution["routes"] == [case.solution["path"]]


def test_maze_long_scorer_rejects_wrong_paths():
    lat = maze_long.LATTICE
    for seed in SEEDS:
        case = maze_long.generate(seed)
        path = [tuple(c) for c in case.solution["path"]]
        on = set(path)
        off = [(r, c) for r in range(lat.n) for c in range(lat.n) if (r, c) not in on]
        wrong = case.first_frame.copy()
        for cell in off[: case.solution["moves"] - 1]:
            y0, y1, x0, x1 = lat.core_box(cell)
            wrong[y0:y1, x0:x1] = PATH
        assert maze_long.score(case, with_last(case, wrong)) == 0.0
        crossing = case.final_frame.copy()
        right, down = walls(case)
        y0, y1, x0, x1 = lat.link_box(*lat.closed_links(right, down)[0])
        crossing[y0:y1, x0:x1] = PATH
        assert maze_long.score(case, with_last(case, crossing)) < 1.0
        half = case.video[D.FRAMES // 2]
        assert 0.2 <= maze_long.score(case, with_last(case, half)) <= 0.8


@pytest.mark.parametrize("name", NAMES)
def test_make_dataset_and_vbvr_writer(name, tmp_path):
    data = tasks.make_dataset(name, 8, seed0=100)
    assert data.videos.shape == (8, D.FRAMES, D.SIZE, D.SIZE, 3) and data.videos.dtype == np.uint8
    np.testing.assert_array_equal(data.videos[3], tasks.generate(name, 103).video)
    case = tasks.generate(name, 7, held_out=True)
    folder = D.write_vbvr_case(case, tmp_path / name / "00000")
    video = D.read_video(folder / "ground_truth.mp4")
    assert video.shape == (D.FRAMES, D.SIZE, D.SIZE, 3)
    assert tasks.score(case, video) >= 0.99  # lossy H.264 still scores
    meta = json.loads((folder / "metadata.json").read_text())
    again = tasks.generate(meta["family"], meta["seed"], meta["held_out"])
    np.testing.assert_array_equal(again.video, case.video)
    assert meta["solution"]["answer_boxes"] == case.solution["answer_boxes"]
