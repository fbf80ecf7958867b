"""The numbers in which the tasks differ from (or match) the originals, one block per task family.

Each block measures the quantity that the fidelity options change most, with fixed seeds, so that two versions of the
package (or two options) can be compared by running this script on each:

* moving obstacle (``SafeHalfCheetah2x3-v0``): the obstacle's start x and its speed over a 1000-step episode in which
  the cheetah does nothing (zero actions);
* ManyAgent Ant (``SafeManyAgentAnt2x3-v0``): the control step ``dt`` and the simulated time of a 1000-step episode;
* corridor walls (``SafeAnt2x4-v0``): how far a torso thrown sideways at 6 m/s towards a wall gets, and the cost at a
  point where the planar and the y-offset wall distances disagree, for each ``walls`` option;
* observations: per velocity and obstacle task and ``obs_mode``, the observation sizes and the state size;
* ShadowHand ReOrientation: the mean reward per step of the hold actions, and the share of steps with cost 1 under
  random actions, for each ``cost_rule``;
* Ant terminations: episodes ended by a fall in 30,000 steps of ``Safety2x4AntVelocity-v0`` under uniform random
  actions (seed 0), the MuJoCo-version number of the README's fidelity table.

How to run::

    python benchmarks/task_fidelity.py                 # all blocks (about a minute on one core)
    python benchmarks/task_fidelity.py --blocks obstacle walls

An option that this version of the package does not know is printed as ``n/a``.
"""

from __future__ import annotations

import argparse

import numpy as np

from rllib_safe.envs import make


def _try_make(name: str, **options):
    try:
        return make(name, **options)
    except ValueError:
        return None


def _zero(env) -> dict:
    return {a: np.zeros(env.action_spaces[a].shape, np.float32) for a in env.possible_agents}


def _random(env, rng) -> dict:
    return {a: rng.uniform(-1, 1, env.action_spaces[a].shape).astype(np.float32) for a in env.possible_agents}


def obstacle_block() -> None:
    env = make("SafeHalfCheetah2x3-v0")
    env.reset(seed=0)
    sim = env.robot.env
    geom = sim.model.geom("obstacle_geom").id
    xs = [float(sim.data.geom_xpos[geom, 0])]
    costs = 0.0
    for _ in range(1000):
        _, _, _, _, infos = env.step(_zero(env))
        xs.append(float(sim.data.geom_xpos[geom, 0]))
        costs += infos["agent_0"]["cost"]
    v = np.diff(xs) / sim.dt
    print(f"obstacle  SafeHalfCheetah2x3-v0  start x {xs[0]:.2f} m | speed over 1000 steps (zero actions): "
          f"min {v.min():.2f} max {v.max():.2f} mean {v.mean():.3f} m/s | end x {xs[-1]:.1f} m | "
          f"episode cost {costs:.0f}")  # fmt: skip


def many_ant_block() -> None:
    env = make("SafeManyAgentAnt2x3-v0")
    sim = env.robot.env
    print(f"many-ant  SafeManyAgentAnt2x3-v0  timestep {sim.model.opt.timestep:g} s x frame_skip {sim.frame_skip} "
          f"= dt {sim.dt:g} s | 1000 steps = {1000 * sim.dt:.0f} s simulated")  # fmt: skip


def walls_block() -> None:
    for walls in ("static", "macpo"):
        env = make("SafeAnt2x4-v0") if walls == "static" else _try_make("SafeAnt2x4-v0", walls=walls)
        if env is None:
            print(f"walls     SafeAnt2x4-v0 walls={walls!r}: n/a")
            continue
        env.reset(seed=0)
        sim = env.robot.env
        qpos, qvel = sim.init_qpos.copy(), np.zeros(sim.model.nv)  # the Ant's 15 qpos come first, walls after
        qpos[0:3], qvel[1] = [0.0, 4.0, 0.6], 6.0  # thrown sideways towards the wall y = 5 + x·tan30 at x = 0
        sim.set_state(qpos, qvel)
        ys = []
        for _ in range(40):
            env.step(_zero(env))
            ys.append(float(sim.data.qpos[1]))
        max_y = max(ys)
        qpos, qvel = sim.init_qpos.copy(), np.zeros(sim.model.nv)
        qpos[0:3] = [40.0, -3.0, 0.55]  # 2 m from the right wall along y, 1.73 m in the plane
        sim.set_state(qpos, qvel)
        print(f"walls     SafeAnt2x4-v0 walls={walls!r}: thrown at 6 m/s from y=4: max torso y {max_y:.2f} m "
              f"(wall face at 5.00) | cost at (40, -3): {env.current_cost():.0f}")  # fmt: skip


def obs_block() -> None:
    tasks = [
        "Safety2x4AntVelocity-v0", "Safety4x2AntVelocity-v0", "Safety2x3HalfCheetahVelocity-v0",
        "Safety6x1HalfCheetahVelocity-v0", "Safety3x1HopperVelocity-v0", "Safety2x3Walker2dVelocity-v0",
        "Safety2x1SwimmerVelocity-v0", "Safety9|8HumanoidVelocity-v0",
        "SafeAnt2x4-v0", "SafeAnt8x1-v0", "SafeHalfCheetah2x3-v0", "SafeHalfCheetah6x1-v0",
        "SafeManyAgentAnt2x3-v0", "SafeManyAgentAnt2x4-v0",
    ]  # fmt: skip
    for name in tasks:
        default = make(name)
        cells = [f"default {default.obs_mode!r}"]
        for mode in ("local", "global", "safepo", "macpo"):
            env = _try_make(name, obs_mode=mode)
            if env is not None:
                dims = sorted({int(s.shape[0]) for s in env.observation_spaces.values()})
                cells.append(f"{mode} {'/'.join(map(str, dims))} (state {env.state_space.shape[0]})")
        print(f"obs       {name:32s} " + " | ".join(cells))


def shadow_block() -> None:
    name = "SafeShadowHandReOrientation-v0"
    for rule in ("macpo", "ffj1", "safe_joint"):
        env = _try_make(name, cost_rule=rule)
        if env is None:
            print(f"shadow    {name} cost_rule={rule!r}: n/a")
            continue
        env.reset(seed=0)
        rewards = [env.step(env.hold_actions())[1]["agent_0"] for _ in range(600)]
        env.reset(seed=0)
        rng = np.random.default_rng(0)
        costs = []
        for _ in range(600):
            act = {a: rng.uniform(-0.3, 0.3, 20).astype(np.float32) for a in env.possible_agents}
            _, _, term, _, infos = env.step(act)
            costs.append(infos["agent_0"]["cost"])
            if term["__all__"]:
                env.reset(seed=1)
        print(f"shadow    {name} cost_rule={rule!r}: mean reward/step of the hold actions {np.mean(rewards):.3f} | "
              f"cost rate under U(-0.3, 0.3) actions {np.mean(costs):.3f}")  # fmt: skip


def termination_block() -> None:
    env = make("Safety2x4AntVelocity-v0")
    rng = np.random.default_rng(0)
    env.reset(seed=0)
    terminations = 0
    for _ in range(30_000):
        _, _, term, trunc, _ = env.step(_random(env, rng))
        if term["__all__"] or trunc["__all__"]:
            terminations += term["__all__"]
            env.reset()
    import mujoco

    print(f"mujoco    Safety2x4AntVelocity-v0 MuJoCo {mujoco.__version__}: {terminations} terminations in 30,000 "
          "uniform-random steps (seed 0)")  # fmt: skip


BLOCKS = {
    "obstacle": obstacle_block,
    "manyant": many_ant_block,
    "walls": walls_block,
    "obs": obs_block,
    "shadow": shadow_block,
    "terminations": termination_block,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--blocks", nargs="*", default=list(BLOCKS), choices=list(BLOCKS))
    args = parser.parse_args()
    for block in args.blocks:
        BLOCKS[block]()


if __name__ == "__main__":
    main()
