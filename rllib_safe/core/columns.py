"""Column and module names that rllib_safe adds to RLlib's train batches."""


class SafeColumns:
    """Batch columns of the safe multi-agent learners (RLlib's own names live in ``ray.rllib.core.columns``)."""

    #: Cost of transition t (the ``infos[agent]["cost"]`` returned by step t); shape ``(T,)`` or ``(T, m)``.
    COSTS = "costs"
    #: Global state that belongs to observation t (``infos[agent]["state"]`` returned with it).
    STATE = "state"
    #: Standardised cost advantages from the agent's cost critic, shape ``(T, m)``.
    COST_ADVANTAGES = "cost_advantages"
    #: Cost value targets (cost GAE returns), shape ``(T, m)``, in the cost normaliser's raw units.
    COST_VALUE_TARGETS = "cost_value_targets"
    #: The HAPPO factor M of the agents updated before this one (Eq. 9 of the MAFOCOPS paper), shape ``(T,)``.
    HAPPO_FACTOR = "happo_factor"
    #: ``log pi_old(a|o)`` recorded once before the agent's epochs (RLlib's ACTION_LOGP comes from the EnvRunner).
    OLD_LOGP = "old_action_logp"


#: Module id of the learner-only centralized critic module (reward critic V(s) and the per-agent cost critics).
CRITIC_ID = "__critic__"
