"""Programs around the pipeline: the traffic simulator, `callpulse demo`, replay of history
files, interval reports, the terminal wallboard, the embedded broker for the demo and tests, and
child processes that never outlive their parent. Nothing in the pipeline imports them. May import
every package but the command line (cli.py).
"""
