from django.db import models

# Upper bounds (milliseconds, inclusive) of the agent-latency histogram's buckets; the last bucket has no upper
# bound. Roughly geometric, so a percentile read from the buckets is within about a quarter of its bucket's
# width whatever the agent: the built-in agent answers in a few ms, a hosted LLM in seconds, a timeout at 60 s.
LATENCY_BUCKETS_MS: tuple[int, ...] = (
    10,
    25,
    50,
    100,
    200,
    300,
    500,
    750,
    1_000,
    1_500,
    2_000,
    3_000,
    5_000,
    7_500,
    10_000,
    15_000,
    20_000,
    30_000,
    60_000,
)
LATENCY_FIELDS: tuple[str, ...] = tuple(f"lat_{index:02d}" for index in range(len(LATENCY_BUCKETS_MS) + 1))


class MessageDay(models.Model):
    """One day's outcomes of the inbound messages of one channel, per outcome: `error_code` "" for answered
    messages, else the failure's code. The dashboard reads these rows, never the messages table, so its cost
    depends on days x channels x codes, not on the number of messages.

    Fed by analytics.stats: one upsert per outcome, inside the record (answered) and failure transactions of
    the messages endpoint and the clean-up of abandoned messages; `manage.py stats rebuild` recomputes past
    days from the messages. Days are UTC dates of the outcome. A message that failed and was answered on a
    retry counts once in each: the rows count what happened, as the integrator saw it.

    `lat_00` .. `lat_19` are a histogram of the agent's latency over the answered messages
    (LATENCY_BUCKETS_MS), from which the dashboard reads p50 and p95.
    """

    day = models.DateField()
    # No index of their own: the unique key leads with the workspace, and a channel's rows are read only
    # through it (every index is one more write on the hot path's upsert).
    workspace = models.ForeignKey("channels_app.Workspace", on_delete=models.CASCADE, related_name="+", db_index=False)
    channel = models.ForeignKey("channels_app.Channel", on_delete=models.CASCADE, related_name="+", db_index=False)
    error_code = models.CharField(max_length=40, blank=True, help_text="Empty for answered messages.")
    messages = models.PositiveIntegerField(default=0)
    replies = models.PositiveIntegerField(default=0, help_text="AI messages sent.")
    credits = models.BigIntegerField(default=0)
    input_tokens = models.BigIntegerField(default=0)
    output_tokens = models.BigIntegerField(default=0)
    agent_ms = models.BigIntegerField(default=0, help_text="Sum of the agent's latency, milliseconds.")
    lat_00 = models.PositiveIntegerField(default=0)
    lat_01 = models.PositiveIntegerField(default=0)
    lat_02 = models.PositiveIntegerField(default=0)
    lat_03 = models.PositiveIntegerField(default=0)
    lat_04 = models.PositiveIntegerField(default=0)
    lat_05 = models.PositiveIntegerField(default=0)
    lat_06 = models.PositiveIntegerField(default=0)
    lat_07 = models.PositiveIntegerField(default=0)
    lat_08 = models.PositiveIntegerField(default=0)
    lat_09 = models.PositiveIntegerField(default=0)
    lat_10 = models.PositiveIntegerField(default=0)
    lat_11 = models.PositiveIntegerField(default=0)
    lat_12 = models.PositiveIntegerField(default=0)
    lat_13 = models.PositiveIntegerField(default=0)
    lat_14 = models.PositiveIntegerField(default=0)
    lat_15 = models.PositiveIntegerField(default=0)
    lat_16 = models.PositiveIntegerField(default=0)
    lat_17 = models.PositiveIntegerField(default=0)
    lat_18 = models.PositiveIntegerField(default=0)
    lat_19 = models.PositiveIntegerField(default=0)

    class Meta:
        verbose_name = "message day"
        db_table = "backoffice_messageday"  # its name from before it moved out of the back office (analytics/0001)
        constraints = [
            # The upsert's conflict target; its leading columns serve one workspace's date range.
            models.UniqueConstraint(fields=["workspace", "day", "channel", "error_code"], name="message_day_key"),
        ]
        # All workspaces' date range (superusers' default view).
        indexes = [models.Index(fields=["day"], name="message_day_day")]

    def __str__(self) -> str:
        return f"{self.day} {self.channel_id} {self.error_code or 'answered'}"
