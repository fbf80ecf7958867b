"""Learner connector pieces: costs and global state from infos, centralized (cost) GAE."""
