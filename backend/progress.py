"""How long-running work reports progress and learns it has been cancelled.

Every stage of the pipeline takes a ``progress(stage, fraction)`` callable and calls it
at least once per step (diffusion step, optimisation step, view rendered). The server's
implementation raises :class:`JobCancelled` from inside that call once the job has been
cancelled, so work stops at the next step without any polling code in the stages. A stage
waiting on work it cannot count calls it with :data:`STILL_WORKING` meanwhile.
"""

from __future__ import annotations

from enum import Enum
from typing import Callable, Protocol


class Way(str, Enum):
    """How a stage runs: as in the benchmark, or otherwise (:meth:`StageClock.plan`). A
    machine learns each way's seconds apart (``StageMemory``): a bake on one worker beside
    two busy processes is not the two-worker bake slowed by the load alone."""

    BENCHMARK = ""
    ONE_WORKER = "one worker"  # no second CPU free: one view (chunk) at a time
    AFTER_THE_FIT = "after the fit"  # the unwrap, not beside the light fit
    TEXELS_HERE = "texels here"  # the bake laying out its own texels (no helper did)


#: The ways a stage runs when other processes took the second CPU. A job teaches their
#: ratios only when it started on a busy machine: the load it read then is what made it run
#: them, and what their seconds are divided by (an unwrap after the fit on a quiet machine,
#: of a small mesh or after an SDS fit, teaches nothing). The other ways (the benchmark's, the bake
#: laying out its own texels) run two workers, which other processes slow unevenly: they
#: teach only on a quiet machine.
BUSY_WAYS = frozenset({Way.ONE_WORKER, Way.AFTER_THE_FIT})


def ratio_key(stage: str, way: Way = Way.BENCHMARK) -> str:
    """The name a machine's ratio for ``stage`` run ``way`` goes by."""
    return f"{stage} ({way.value})" if way is not Way.BENCHMARK else stage


def way_scale(scales: dict[str, float], stage: str, way: Way = Way.BENCHMARK) -> float:
    """A stage's weight per benchmark second on this machine when run ``way``: its own
    where the machine learned it, else the stage's as the benchmark ran it. The unwrap
    after the fit borrows nothing: the plain uv stage is the wait for the helper's unwrap,
    a few hundredths of a second whose ratio says nothing about xatlas's whole run."""
    own = scales.get(ratio_key(stage, way))
    if own is not None:
        return own
    return 1.0 if way is Way.AFTER_THE_FIT else scales.get(stage, 1.0)


ProgressFn = Callable[[str, float], None]
#: The fraction a stage reports while it waits on work it cannot count (another process's):
#: it is still at work and can be cancelled, and nothing moves on the bar.
STILL_WORKING = -1.0


class PlanFn(Protocol):
    """``plan(stage, seconds, way, of_object)``: a stage will take ``seconds`` at the
    benchmark's pace, run ``way``; ``of_object``: the seconds were measured from this
    object's own work (:func:`photo_seconds`), so its cost from the views does not scale them."""

    def __call__(self, stage: str, seconds: float, way: Way = Way.BENCHMARK, of_object: bool = False) -> None: ...


class JobCancelled(Exception):
    """Raised inside a ``progress`` call when the job was cancelled; unwinds the stage."""


def no_progress(stage: str, fraction: float) -> None:
    """A ``ProgressFn`` for callers that do not care."""


def no_plan(stage: str, seconds: float, way: Way = Way.BENCHMARK, of_object: bool = False) -> None:
    """A ``PlanFn`` for callers without a progress clock."""


def sub_progress(progress: ProgressFn, stage: str, start: float, end: float) -> Callable[[float], None]:
    """Map a sub-step's own 0..1 fraction onto ``[start, end]`` of a named stage."""

    def report(fraction: float) -> None:
        progress(stage, start + (end - start) * min(1.0, max(0.0, fraction)))

    return report


#: Seconds each stage of a Make Mesh takes at pace 1 (the speed probe's unit,
#: ``speed_probe.py``), on the quick proxy's 21 views at 256 px, 50k faces and a 1024 px
#: texture, for a typical object: the medians of nine objects (the two examples and the
#: quality set's seen objects, ``bench_eta.py --objects seen --orders fresh``, two rounds on
#: each of two occasions: 36 runs through ``blend123 serve`` on a quiet 2-core CPU), each
#: divided by the speed probe's reading then. The quality set's unseen objects are left to
#: check them on. Only their ratios and the probe's unit matter: :class:`StageClock`
#: rescales them by the pace it observes and the object's cost (``object_scale``), and a
#: backend re-weighs them by what its own machine showed. A stage missing here counts as
#: one second.
STAGE_SECONDS: dict[str, float] = {
    "load model": 0.25,
    "views": 0.85,
    "carve": 1.05,
    "photo": 2.5,
    "mesh": 0.5,
    "refine": 1.7,
    # The wait for the unwrap made beside the light fit (with its texels), on the CPU the
    # one-thread fit leaves free: what is left of it when the fit ends (the duck's fit
    # outlasts its unwrap; most objects' unwrap outlasted their fit by 0.4-1.1 s).
    "uv": 1.2,
    "texture": 1.35,  # the bake on two threads, its texels laid out beside the fit
    "export": 0.25,
}
#: The same stages when they run otherwise than in the benchmark, at its pace: on one
#: worker (no second CPU free), photo carving walking one view at a time (1.5-1.75x the
#: two-worker time, duck and mug) and the bake one chunk at a time, laying out its own
#: texels (1.3x the two-worker bake that does: duck 3.0-3.2 s against 2.3-2.45 s, mug
#: 4.0-4.4 s against 3.1-3.2 s; that bake is 4/3 of the benchmark's);
#: and the unwrap after the fit (no CPU free for the helper, a small mesh, or a fit that
#: moves vertices) of the benchmark's 50k faces: about what the unwrap beside the fit takes
#: (the fit and the wait together: 2.9 s), on one thread and not shared (1.55 s).
ONE_WORKER_SECONDS: dict[str, float] = {"photo": 4.0, "texture": 2.35}
_INLINE_UNWRAP_SECONDS = 1.55
BENCHMARK_FACES = 50_000
#: Stages whose cost is set by the output's size (faces, texture) or the options, not by
#: the object: the light fit runs on the mesh decimated to ``refine_faces`` with a fixed
#: number of pixels a step. The pace an object's own stages show is part machine, part
#: object; these move from the expected pace only half way (in log space) toward it
#: (``bench_busy.py --image examples/mug.png`` against the duck, quiet and beside two busy
#: processes: the mug's views, carving and photo carving took 2-2.6x the duck's, its light
#: fit 1.2-1.26x, its texture 1.2x) until they show their own.
FIXED_COST_STAGES = frozenset({"load model", "refine", "uv", "texture", "export"})
_FIXED_PACE_EXPONENT = 0.5
#: An object's cost (``StageClock.object_cost``) is what its orbit's views took over their
#: weight at the pace expected of the machine: a quick-proxy orbit renders the object's own
#: shell, and the mesh job carves, photo-carves and meshes the same silhouettes. Through
#: ``serve``, twelve objects' mesh jobs (the quality set's, the duck, the mug; two runs
#: each) ran 3.3x apart, and went as their orbit's views to the power 0.79 (0.21 of
#: spread left in log space); the carving, photo carving and meshing to the power 1.13.
#: Bounded: a view count or a stall far from the benchmark's says little of the object.
OBJECT_COST_BOUNDS = (0.25, 4.0)
#: The part of the views done before they tell what the object costs (the proxy renders
#: one view per step, each of the same shell).
_OBJECT_COST_FROM = 0.25
#: A quick-proxy orbit's views beside another busy thread of the backend's process (the
#: start-up's import of torch, in a command's own backend) take 1.7-4x their time alone,
#: waiting for the GIL, but their own thread's CPU time only 1.06-1.31x (six objects,
#: median 1.16: memory and caches shared): what the object costs, from that CPU time.
_OWN_CPU_BESIDE = 1.16


def object_scale(stage: str, object_cost: float) -> float:
    """How much longer than the benchmark's object a stage takes on an object of
    ``object_cost``: in proportion for the stages the object sets, half way (in log
    space) for the fixed-cost ones."""
    return object_cost ** (_FIXED_PACE_EXPONENT if stage in FIXED_COST_STAGES else 1.0)


#: Photo carving's seconds at the benchmark's pace, from the work it samples before it
#: starts (``photo.PhotoWork``): a fixed part (blurring the views, the sample, the vote and
#: the carved field) and a part per ray and per compared patch point. Fitted on the twelve
#: objects' photo carving through ``serve`` (``benchmarks/recorded``: each object's median
#: of 12 runs, per second of the probe's pace): within 0.10 in log space left out one at a
#: time, 1.24x at worst (the donut), where the object's cost its views showed left tiles
#: 2.5x short and the chair 1.4x long (``bench_eta.py`` measures the bar with it).
_PHOTO_FIXED_S = 0.51
_PHOTO_RAY_S = 14.6e-6
_PHOTO_POINT_S = 2.39e-6
#: Of the fixed part, what comes before the walk (blurring the views, the sample): 0.23-0.40 s
#: on five objects, two workers on the 2-core CPU; the rest decides the votes and carves.
_PHOTO_SET_UP_S = 0.3


def photo_seconds(rays: int, compared: float) -> float:
    """Photo carving at the benchmark's pace (two workers) for ``rays`` rays comparing
    ``compared`` patch points in all."""
    return _PHOTO_FIXED_S + _PHOTO_RAY_S * rays + _PHOTO_POINT_S * compared


def photo_fractions(view_rays: list[int], compared: float) -> list[float]:
    """Photo carving's fraction done after its set-up and after each view it walks (in
    order, ``view_rays[i]`` rays each), in proportion to :func:`photo_seconds`: a fixed
    share would leave a small object's set-up (a third of a chair's stage) reading as the
    start of a stage three times as long."""
    total = photo_seconds(sum(view_rays), compared)
    walk_s = total - _PHOTO_FIXED_S
    rays = max(sum(view_rays), 1)
    done, fractions = 0, [_PHOTO_SET_UP_S / total]
    for count in view_rays:
        done += count
        fractions.append((_PHOTO_SET_UP_S + walk_s * done / rays) / total)
    return fractions


#: Benchmark seconds the uv stage takes at least when the light fit outlasted the unwrap
#: beside it: the hand-over of the atlas and its texels (0.12-0.29 s on the duck at a pace
#: of 0.7). Replayed on recorded runs (``replay_eta.py``), half as long left the duck's
#: worst moment 27% where this gave 23%, twice as long the chair's 41% where this gave 30%.
_HAND_OVER_S = 0.15
#: How much benchmark work (seconds) the expected pace counts for in a job's pace.
_PRIOR_WEIGHT = 2.0
#: How much of its own weight a stage must do before its own pace outweighs the job's.
_STAGE_PRIOR = 1.0
#: The stages of each kind of job, in order ("load model" only when a model is needed).
JOB_STAGES: dict[str, tuple[str, ...]] = {
    "novel_view": ("load model", "views"),
    "orbit": ("load model", "views"),
    "reconstruct": ("load model", "carve", "photo", "mesh", "refine", "uv", "texture", "export"),
}


#: The ratios a machine learns (``StageMemory``), by :func:`ratio_key`: every stage as the
#: benchmark ran it, and the ways a stage can run otherwise.
RATIO_KEYS = frozenset(
    [*STAGE_SECONDS, *(ratio_key(stage, Way.ONE_WORKER) for stage in ONE_WORKER_SECONDS),
     ratio_key("uv", Way.AFTER_THE_FIT), ratio_key("texture", Way.TEXELS_HERE)]
)


def unwrap_seconds(faces: int, beside: bool) -> float:
    """The uv stage at the benchmark's pace, the unwrap's time in proportion to the faces:
    made beside the fit, the wait for what is left of it when the fit ends (the benchmark's
    50k faces: the fit and the wait together; the 23k-25k of a chair or a lamp were done
    before the fit, leaving the hand-over); else the whole unwrap, after the fit."""
    share = faces / BENCHMARK_FACES
    if beside:
        return max(_HAND_OVER_S, (STAGE_SECONDS["refine"] + STAGE_SECONDS["uv"]) * share - STAGE_SECONDS["refine"])
    return _INLINE_UNWRAP_SECONDS * share


#: Runnable threads a job adds to the machine's: its stage's one, and a part for the threads
#: that carry its events (the server's loop, ZeroMQ's I/O, the client's). Fitted: one-thread
#: stages ran 1.6-1.7x slower beside two busy processes on two CPUs (``bench_busy.py``,
#: views, mesh, refine), where one thread among three would run 1.5x.
_JOB_THREADS = 1.4


def load_pace(free_cpus: float, cpus: int) -> float:
    """How much slower than the benchmark a stage on one thread runs with ``free_cpus`` of
    ``cpus`` left by other processes: the CPUs shared fairly among the others' runnable
    threads and the job's (1.7x beside two busy processes on two CPUs). Stages that would
    have used a second CPU the others took :meth:`StageClock.plan` themselves on one worker,
    at their one-thread weight."""
    cpus = max(cpus, 1)
    others = max(0.0, cpus - max(free_cpus, 0.0))
    # As a share of the quiet machine's: the benchmark's own threads had no CPU to spare
    # on a one-CPU machine either.
    return max(1.0, (others + _JOB_THREADS) / cpus) / max(1.0, _JOB_THREADS / cpus)


_QUIET_FREE = 0.8


def quiet_machine(free_cpus: float, cpus: int) -> bool:
    """Whether other processes leave the CPUs the benchmark had (two, or all of fewer): a
    job then teaches this machine's ratios of the stages run as in the benchmark, and a job
    that starts otherwise those of :data:`BUSY_WAYS` (``StageMemory``). The counters never
    read quite idle (1.9-2.0 of 2 free measured on a quiet machine)."""
    return free_cpus >= _QUIET_FREE * min(cpus, 2)


class StageClock:
    """A whole job's fraction done and time left, from its stages' own fractions.

    Each stage weighs what it took in the benchmark (``STAGE_SECONDS``); the job may
    :meth:`plan` a stage otherwise once it knows how it will run. The time left is the
    weight still to do at the pace this job has shown (seconds per benchmark second),
    starting from the expected ``prior_pace`` (the machine's pace its jobs showed, times
    ``load``, what other processes' work costs it now), so a slower machine, a busy one, or
    a bigger input corrects the estimate as the job runs. An object whose cost its orbit
    showed (``object_cost``) weighs its stages by it from the start (:func:`object_scale`). The running stage's rest goes at
    its own pace once it has shown one; fixed-cost stages take only part of the object's
    pace. A stage that never reports (a model already loaded, none needed) drops out of the
    plan once a later stage starts. On a quiet machine the light fit and the uv stage,
    which waits for the unwrap the helper made beside the fit, end together with the later
    of the two: a fit that stops early (its loss levelled off) leaves a longer wait.
    """

    def __init__(
        self,
        kind: str,
        weights: dict[str, float] = STAGE_SECONDS,
        prior_pace: float = 1.0,
        load: float = 1.0,
        scales: dict[str, float] | None = None,
        quiet: bool = True,
        object_cost: float = 1.0,
    ) -> None:
        """``scales``: a stage's weight per benchmark second on this machine, where it
        differs from the others' (``StageMemory``), by :func:`ratio_key`; a :meth:`plan` is
        scaled by its way's.
        ``quiet``: other processes left the CPUs free as the job started (:func:`quiet_machine`).
        ``object_cost``: what the object costs against the benchmark's (:meth:`object_cost_shown`
        of the orbit it comes from); 1 where unknown."""
        self.stages = list(JOB_STAGES.get(kind, ()))
        self.object_cost = object_cost
        self.weights = {stage: weight * object_scale(stage, object_cost) for stage, weight in weights.items()}
        self.scales = dict(scales or {})
        self.prior_pace = prior_pace
        self.load = load  # the part of ``prior_pace`` that other processes' load explains
        self.quiet = quiet
        self.pace = prior_pace  # the latest estimate, for the machine's next job
        self.worked_s = 0.0  # benchmark seconds of work done
        self.stage_seconds: dict[str, float] = {}  # wall seconds of each stage that ended
        self.planned: dict[str, float] = {}  # stages the job planned: their benchmark seconds
        self.ways: dict[str, Way] = {}  # and how they run
        self.of_object: set[str] = set()  # planned from the object's own work: not scaled by its cost
        self._current = -1
        self._stage_started = 0.0
        self._overall = 0.0
        self._latest = (0.0, 0.0)  # the running stage's fraction, and the job's elapsed seconds
        # The job's thread's CPU seconds (< 0: not told) at the running stage's start and
        # latest, and each ended stage's: what the object costs where the wall clock cannot say.
        self._stage_cpu_started = self._latest_cpu = -1.0
        self.stage_cpu: dict[str, float] = {}

    def _weight(self, stage: str) -> float:
        return self.weights.get(stage, 1.0)

    def plan(self, stage: str, seconds: float, way: Way = Way.BENCHMARK, of_object: bool = False) -> None:
        """``stage`` (still to come or running) will take ``seconds`` at the benchmark's pace,
        run ``way``. ``of_object``: measured from this object's work, not the typical
        object's, so the object's cost does not scale them."""
        self.planned[stage] = max(0.0, float(seconds))
        self.ways[stage] = way
        (self.of_object.add if of_object else self.of_object.discard)(stage)
        self.weights[stage] = self.planned[stage] * way_scale(self.scales, stage, way) * self.object_share(stage)

    def object_share(self, stage: str) -> float:
        """How much longer than the typical object's ``stage`` takes on this object
        (:func:`object_scale`), 1 for a stage planned from the object's own work."""
        return 1.0 if stage in self.of_object else object_scale(stage, self.object_cost)

    def object_cost_shown(self, stage: str = "views", own_cpu: bool = False, pace: float | None = None) -> float | None:
        """What the object costs against the benchmark's, as ``stage`` shows it: its seconds
        over its weight at the pace expected (of the machine, under its load), so far once
        a quarter of it is done; None before, or when it did not run.

        ``own_cpu``: from the job's thread's CPU seconds instead (told to :meth:`update`),
        for a stage that ran on that thread beside another busy one of the process, over its
        weight at the machine's unloaded ``pace`` (default: the expected pace without the load)."""
        running = 0 <= self._current < len(self.stages) and self.stages[self._current] == stage
        if stage in (self.stage_cpu if own_cpu else self.stage_seconds):
            seconds, fraction = (self.stage_cpu if own_cpu else self.stage_seconds)[stage], 1.0
        elif running and (not own_cpu or min(self._stage_cpu_started, self._latest_cpu) >= 0):
            fraction, elapsed_s = self._latest
            seconds = self._latest_cpu - self._stage_cpu_started if own_cpu else elapsed_s - self._stage_started
            if fraction < _OBJECT_COST_FROM:
                return None
        else:
            return None
        if own_cpu:
            seconds /= _OWN_CPU_BESIDE
        base = (pace if pace else self.prior_pace / self.load) if own_cpu else self.prior_pace
        expected = self._weight(stage) * fraction * base
        if seconds <= 0 or expected <= 0:
            return None
        low, high = OBJECT_COST_BOUNDS
        return min(max(seconds / expected, low), high)

    def _end_stage(self, elapsed_s: float, cpu_s: float) -> None:
        """The running stage ended ``elapsed_s`` into the job, ``cpu_s`` of its thread's CPU."""
        stage = self.stages[self._current]
        self.stage_seconds[stage] = max(0.0, elapsed_s - self._stage_started)
        if cpu_s >= 0 and self._stage_cpu_started >= 0:
            self.stage_cpu[stage] = max(0.0, cpu_s - self._stage_cpu_started)

    def _fixed_pace(self, pace: float) -> float:
        """The pace of a fixed-cost stage: half way (in log space) from the expected to ``pace``."""
        return self.prior_pace * (pace / self.prior_pace) ** _FIXED_PACE_EXPONENT

    def _unwrap_left(self, fit_s: float, fixed_pace: float) -> float:
        """Seconds left of the unwrap beside a light fit that has run ``fit_s``: in the
        benchmark the fit and the uv stage's wait together took the unwrap's time."""
        return (self._weight("refine") + self._weight("uv")) * fixed_pace - fit_s

    def _wait_for_the_unwrap(self) -> None:
        """The light fit just ended; the uv stage waits for the unwrap the helper made beside
        it. Together they take the longer of the two, so a fit that stopped early leaves a
        longer wait and one that ran long next to none."""
        fixed_pace = self._fixed_pace(self.pace)
        left = self._unwrap_left(self.stage_seconds["refine"], fixed_pace)
        self.weights["uv"] = max(_HAND_OVER_S, left / fixed_pace)

    def finish(self, elapsed_s: float, cpu_s: float = -1.0) -> None:
        """The job ended ``elapsed_s`` after it started (``cpu_s``: its thread's CPU seconds
        then, where told): the running stage's time is known."""
        if 0 <= self._current < len(self.stages):
            self._end_stage(elapsed_s, cpu_s)

    def update(self, stage: str, fraction: float, elapsed_s: float, cpu_s: float = -1.0) -> tuple[float, float]:
        """(fraction of the whole job done, seconds left; < 0 while unknown). ``cpu_s``: the
        job's thread's CPU seconds (``time.thread_time()``, < 0: not told), for
        :meth:`object_cost_shown` ``own_cpu``."""
        if stage not in self.stages:  # a stage the plan did not know: it runs now
            self.stages.insert(self._current + 1, stage)
        at = self.stages.index(stage)
        if at > self._current + 1:  # the stages in between never ran (no model to load)
            del self.stages[self._current + 1 : at]
            at = self._current + 1
        if at > self._current:
            if self._current >= 0:
                self._end_stage(elapsed_s, cpu_s)
                if stage == "uv" and self.stages[self._current] == "refine" and self._unwrap_beside():
                    self._wait_for_the_unwrap()
            self._stage_started, self._stage_cpu_started = elapsed_s, cpu_s
        self._current = max(self._current, at)
        fraction = min(1.0, max(0.0, fraction))
        self._latest, self._latest_cpu = (fraction, elapsed_s), cpu_s
        before = sum(self._weight(s) for s in self.stages[: self._current])
        weight = self._weight(stage)
        done = before + weight * fraction
        total = sum(self._weight(s) for s in self.stages)
        # A plan that grows the work left holds the bar rather than moving it back.
        overall = self._overall = max(self._overall, done / total if total > 0 else 0.0)
        self.worked_s = done
        if elapsed_s <= 0:
            return overall, -1.0
        # Seconds per benchmark second: what this job has shown, starting from the expected
        # pace until some of the work is done, so the first moments (reading inputs, a
        # stage's first step) do not throw the estimate off.
        pace = (elapsed_s + _PRIOR_WEIGHT * self.prior_pace) / (done + _PRIOR_WEIGHT)
        self.pace = pace
        fixed_pace = self._fixed_pace(pace)
        rest = sum(self._weight(s) * (fixed_pace if s in FIXED_COST_STAGES else pace) for s in self.stages[self._current + 1 :])
        # The running stage's rest at its own pace, from the job's until it has shown one.
        expected = fixed_pace if stage in FIXED_COST_STAGES else pace
        own = (elapsed_s - self._stage_started + _STAGE_PRIOR * weight * expected) / (weight * (fraction + _STAGE_PRIOR)) if weight > 0 else 0.0
        left = weight * (1.0 - fraction) * own
        if stage == "refine" and self._unwrap_beside():
            # The uv stage will wait for what is left of the unwrap beside the fit: the two
            # end with the later of the fit (and the hand-over) and the unwrap.
            wait = self._weight("uv") * fixed_pace
            unwrap_left = self._unwrap_left(elapsed_s - self._stage_started, fixed_pace)
            return overall, max(left + _HAND_OVER_S * fixed_pace, unwrap_left) + rest - wait
        return overall, left + rest

    def _unwrap_beside(self) -> bool:
        """Whether the uv stage comes next and waits for the helper's unwrap (the benchmark's
        way) on a quiet machine. Beside busy processes the helper's unwrap runs at whatever
        they leave it: `convert`'s bar, which the pair's estimate had left 14-54% long at
        worst against 12-20% without it (four runs each, alternated), keeps the stages apart."""
        at = self.stages.index("refine")
        return self.quiet and at + 1 < len(self.stages) and self.stages[at + 1] == "uv" and self.ways.get("uv", Way.BENCHMARK) is Way.BENCHMARK
