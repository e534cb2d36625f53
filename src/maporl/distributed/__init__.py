"""backend=ray: rollout worker and verifier actors (actors.py), one learner actor per adapter and the recovery
of a lost actor (learners.py), joining or starting a cluster (cluster.py). Ray is imported lazily, in these files
only."""
