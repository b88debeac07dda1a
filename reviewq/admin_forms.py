"""Admin form fields for ops' configuration: tags as checkboxes, business rules as one line each.

The models keep JSON (tags are a list, rules a list of ``{"condition", "message"}``) so that
``import_config`` and the pipeline read them as before; these fields only spare ops typing JSON.
"""

from __future__ import annotations

from itertools import chain
from typing import Any

from django import forms
from django.core.exceptions import ValidationError

from reviewq.models import RiskPolicy, ToolSpec

# Shown on the pages where ops write conditions (risk policies, tools' business rules).
CONDITION_LANGUAGE_HTML = """
<p><strong>Conditions</strong> read like Python over the call's arguments, for example
<code>amount &lt;= 500</code>, <code>reason in ["no longer needed", "ordered by mistake"]</code>,
<code>len(item_ids) &lt;= 3 and not payment_method_id.startswith("gift_card")</code>,
<code>address.country == "US"</code> (a dotted path reads nested objects).</p>
<p>Allowed: comparisons (<code>== != &lt; &lt;= &gt; &gt;= in not in</code>), <code>and or not</code>,
arithmetic, lists, strings and numbers, <code>len abs min max</code> and the string methods
<code>lower upper startswith endswith</code>. A name the arguments lack is <code>None</code>, and
comparing <code>None</code> with a number is false, so a condition never fails on a missing
argument. Nothing else is evaluated: no attribute access, imports or other calls.</p>
"""
RULE_SEPARATOR = "=>"


def _known_tags() -> list[tuple[str, str]]:
    """The standard risk tags and any other tag ops already use, as checkbox choices."""
    used = chain.from_iterable(
        chain(
            ToolSpec.objects.values_list("risk_tags", flat=True),
            RiskPolicy.objects.values_list("match_tags", flat=True),
        )
    )
    standard = dict(ToolSpec.RiskTag.choices)
    extra = sorted({tag for tag in used if isinstance(tag, str) and tag not in standard})
    return [*standard.items(), *((tag, tag) for tag in extra)]


class TagsField(forms.MultipleChoiceField):
    widget = forms.CheckboxSelectMultiple

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(required=False, choices=_known_tags, **kwargs)


class RulesField(forms.Field):
    """Business rules, one per line: ``condition => message`` (the message is what the model and
    the reviewer are told when a call breaks the rule)."""

    widget = forms.Textarea(attrs={"rows": 4, "cols": 90, "spellcheck": "false"})

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(
            required=False,
            help_text=f"One rule per line: <code>condition {RULE_SEPARATOR} message</code>, e.g. "
            f"<code>amount &lt;= 500 {RULE_SEPARATOR} refunds above 500 need a manager</code>.",
            **kwargs,
        )

    def prepare_value(self, value: Any) -> Any:
        if isinstance(value, list):
            return "\n".join(
                f"{rule.get('condition', '')} {RULE_SEPARATOR} {rule['message']}"
                if rule.get("message")
                else str(rule.get("condition", ""))
                for rule in value
                if isinstance(rule, dict)
            )
        return value

    def to_python(self, value: Any) -> list[dict[str, str]]:
        text = "" if value in self.empty_values else str(value)
        rules = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            condition, separator, message = _split_rule(line)
            if not condition:
                raise ValidationError(f"line {number}: a rule needs a condition before {RULE_SEPARATOR!r}")
            rules.append({"condition": condition, "message": message if separator else ""})
        return rules


def _split_rule(line: str) -> tuple[str, str, str]:
    """``condition => message`` split at the first separator outside a quoted string."""
    quote = ""
    for index, char in enumerate(line):
        if quote:
            quote = "" if char == quote else quote
        elif char in "\"'":
            quote = char
        elif line.startswith(RULE_SEPARATOR, index):
            return line[:index].strip(), RULE_SEPARATOR, line[index + len(RULE_SEPARATOR) :].strip()
    return line.strip(), "", ""


class ToolSpecForm(forms.ModelForm):
    risk_tags = TagsField()
    rules = RulesField()

    class Meta:
        model = ToolSpec
        fields = ["name", "description", "parameters", "risk_tags", "rules", "enabled"]


class RiskPolicyForm(forms.ModelForm):
    match_tags = TagsField(help_text="Matches when the tool has any of these tags; none ticked: any tool.")

    class Meta:
        model = RiskPolicy
        fields = [
            *("name", "priority", "enabled", "tool_pattern", "match_tags", "condition", "min_uncertainty"),
            *("model_tier", "match_pii", "requires_llm", "decision", "adjudicator_tier"),
            *("on_adjudicator_approve", "on_adjudicator_reject", "required_approvals", "reviewer_group"),
            *("sla_seconds", "expiry_seconds", "notify_url", "notify_email"),
        ]
