"""The app's topics: their names, the partition plan, and creating them (`callpulse topics create`).

Every data topic has the partition count of `kafka.partitions`: callpulse needs one count for all
of them, and the worker stops at start, naming the topic, when an existing one differs.
"""

from __future__ import annotations

STATE_TABLE = "queue-state"


def changelog_topic_name(app_id: str) -> str:
    """The state table's changelog topic, named as Faust names it."""
    return f"{app_id}-{STATE_TABLE}-changelog"


def progress_topic_name(app_id: str) -> str:
    """The topic where first-stage workers share their input partitions' progress (align.py)."""
    return f"{app_id}-router-progress"


def topic_plan(config) -> dict[str, int]:
    """Every topic the app uses, with its partition count (one count for all data topics)."""
    n = config.kafka.partitions
    app_id = config.stream.app_id
    return {
        config.kafka.topic_events: n,
        config.kafka.topic_batches: n,
        config.kafka.topic_dead_letter: n,
        config.kafka.topic_intervals: n,
        config.kafka.topic_agent_intervals: n,
        changelog_topic_name(app_id): n,
        f"{app_id}-__assignor-__leader": 1,  # Faust's own leader-election topic
        progress_topic_name(app_id): 1,  # the first stage's shared progress (align.py)
    }


async def partition_mismatches(admin, plan: dict[str, int]) -> list[tuple[str, int, int]]:
    """(topic, partitions it has, partitions planned) of each existing planned topic that differs."""
    out = []
    for desc in await admin.describe_topics(list(plan)):
        have = len(desc.get("partitions", []))
        if have != plan[desc["topic"]]:
            out.append((desc["topic"], have, plan[desc["topic"]]))
    return out


async def create_topics(config) -> list[str]:
    """Create the app's topics explicitly; existing ones must have the planned partition count."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(**config.kafka.client_kwargs())
    await admin.start()
    try:
        plan = topic_plan(config)
        existing = set(await admin.list_topics())
        special = {
            # the state table keeps the latest value per key
            changelog_topic_name(config.stream.app_id): {"cleanup.policy": "compact"},
            # an interval's latest record is the one that counts (it is re-sent after a takeover)
            config.kafka.topic_intervals: {"cleanup.policy": "compact"},
            config.kafka.topic_agent_intervals: {"cleanup.policy": "compact"},
            # progress reports are useless after seconds (align.py): keep a minute of them
            progress_topic_name(config.stream.app_id): {"retention.ms": "60000", "segment.ms": "60000"},
        }
        missing = [
            NewTopic(name, n, config.kafka.replication_factor, topic_configs=special.get(name, {}))
            for name, n in plan.items() if name not in existing
        ]
        if missing:
            await admin.create_topics(missing)
        problems = [f"{topic}: has {have} partitions, expected {want}"
                    for topic, have, want in await partition_mismatches(admin, plan)]
        if problems:
            raise SystemExit("topic partition counts do not match the config (callpulse needs one count for all its topics):\n  " + "\n  ".join(problems))
        return [t.name for t in missing]
    finally:
        await admin.close()
