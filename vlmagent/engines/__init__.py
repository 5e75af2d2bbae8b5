"""Rollout engines behind the agent's Actor interface (docs/rollout_server.md).

openai_server.py  ServerActor: each assistant turn sampled by a vLLM / SGLang server from the
                  episode's exact token ids and images; ids and log-probs come back
loopback.py       a TEST STAND-IN for such a server: the tiny in-process Policy on CPU behind
                  the same HTTP request shapes (never a production engine)
training.py       what online RL does with a server: one actor per stage, weight sync after
                  each optimiser step, the train-vs-rollout log-prob gap and TIS weights
"""
