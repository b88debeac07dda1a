"""Risk policies: deterministic code, configured in admin, that decides an action's fate.

Rules that no configuration can loosen:
- a tool ops have not registered (no enabled ToolSpec) is held for a human: it may have effects;
- for a tool ops registered, ops' definition is the truth: an agent's definition whose
  description or parameters differ from the ones ops registered is held, with the differences
  shown to the reviewer (text is compared after Unicode normalisation, so look-alike letters
  and invisible characters count as a difference);
- the agent's own description of a tool can add risk tags, never remove them;
- nothing the model says is an input: risk comes from the tool, its arguments and measured
  uncertainty, so a prompt injection cannot talk an action into release;
- payments, PII changes and destructive actions are released automatically only by a bounded
  policy: one that names the tool or the risk tag and carries an argument condition;
- when no policy matches, the action is held (fail closed);
- a plan of several calls gets the strictest decision of its calls;
- a reply, an extraction or a label changes nothing outside the conversation: released;
- what the second model's verdict leads to is the policy's choice, and ``unsure`` always means
  a human decides.
"""

from __future__ import annotations

import fnmatch
import re
import unicodedata
from dataclasses import dataclass, field
from typing import Any

from reviewq import untrusted
from reviewq.config.snapshot import Configuration, current_configuration
from reviewq.errors import ApplicationError
from reviewq.models import RISKY_TAGS, RiskPolicy, ToolSpec
from router.conditions import evaluate_condition
from router.contracts import Tier
from router.pii import PIIFinding, find_pii

# Strictest last: the plan's decision is the max over its calls.
_STRICTNESS = {
    RiskPolicy.Decision.AUTO: 0,
    RiskPolicy.Decision.ADJUDICATE: 1,
    RiskPolicy.Decision.HUMAN: 2,
    RiskPolicy.Decision.BLOCK: 3,
}
# Words in an agent's tool description that reveal a risk ops may not have tagged.
_DESCRIPTION_TAGS = [
    (
        "payment",
        re.compile(
            r"\b(refund|pay|payment|charge|purchase|transfer (?:money|funds)|invoice|billing)\w*", re.I
        ),
    ),
    ("destructive", re.compile(r"\b(delet|remov|cancel|destroy|drop|wipe|terminat|revok)\w*", re.I)),
    (
        "external_comm",
        re.compile(
            r"\b(send|sms|message|notify|post to|transfer to)\b"
            r"|\be-?mail(?:s|ed|ing)?\s+(?:the|a|an|to|them|him|her|users?|customers?|clients?)\b",
            re.I,
        ),
    ),
]
# Personal data is a risk to change or pass on, not to look something up by ("find user by email").
_PII_NOUN = re.compile(r"\b(address|phone|e-?mail|birth|passport|ssn|social security|personal)\w*", re.I)
_WRITE_VERB = re.compile(
    r"\b(?:modif(?:y|ies|ied|ying)|updat(?:e|es|ed|ing)|chang(?:e|es|ed|ing)|set(?:s|ting)?"
    r"|edit(?:s|ed|ing)?|add(?:s|ed|ing)?|creat(?:e|es|ed|ing)|writ(?:e|es|ing)|stor(?:e|es|ed|ing)"
    r"|sav(?:e|es|ed|ing)|register(?:s|ed|ing)?|delet(?:e|es|ed|ing)|remov(?:e|es|ed|ing)"
    r"|export(?:s|ed|ing)?|shar(?:e|es|ed|ing)|send(?:s|ing)?|sent|submit(?:s|ted|ting)?)\b",
    re.I,
)


@dataclass
class CallContext:
    """What a policy may look at for one proposed call: never the model's own claims."""

    name: str
    arguments: dict[str, Any]
    uncertainty: float | None = None
    tier: str = ""
    # The agent's own definition of the tool, as it sent it; None when there is none to compare
    # (a pasted action in the admin's preview).
    agent_description: str | None = None
    agent_parameters: dict[str, Any] | None = None
    path: str = "$.arguments"  # where the arguments are in the action, for PII findings

    def pii(self) -> list[PIIFinding]:
        return find_pii(self.arguments, self.path)


@dataclass
class PolicyDecision:
    decision: str
    reason: str
    policy: RiskPolicy | None = None
    risk_tags: list[str] = field(default_factory=list)
    # Personal data in the action's arguments, found once per proposal (policies match on it).
    pii: list[PIIFinding] = field(default_factory=list)
    # How the agent's definitions of the called tools differ from the ones ops registered.
    definition_differences: list[str] = field(default_factory=list)

    @property
    def pii_kinds(self) -> list[str]:
        return sorted({finding.kind for finding in self.pii})

    def as_dict(self) -> dict[str, Any]:
        trail: dict[str, Any] = {
            "decision": self.decision,
            "policy": self.policy.name if self.policy else None,
            "reason": self.reason,
            "risk_tags": self.risk_tags,
        }
        if self.definition_differences:
            trail["definition_differences"] = self.definition_differences
        return trail

    def needs_llm_proposal(self, tier: str) -> bool:
        """The matching policy accepts only LLM-tier proposals, and this one is from ``tier``."""
        return self.policy is not None and self.policy.requires_llm and tier == Tier.SLM


def normalized_text(text: str) -> str:
    """``text`` as compared and searched: NFKC (fullwidth letters become plain ones), without
    format characters (zero-width spaces and joiners), whitespace collapsed, case folded."""
    text = unicodedata.normalize("NFKC", text or "")
    text = "".join(char for char in text if unicodedata.category(char) != "Cf")
    return " ".join(text.split()).casefold()


def description_tags(description: str) -> set[str]:
    """Risk tags an agent's own tool description reveals (they only ever add to ops' tags).

    A keyword list cannot read every language or phrasing: it only adds tags where ops
    registered no definition to compare with (see ``definition_differences``).
    """
    description = normalized_text(description)
    tags = {tag for tag, pattern in _DESCRIPTION_TAGS if pattern.search(description)}
    if _PII_NOUN.search(description) and _WRITE_VERB.search(description):
        tags.add("pii")
    return tags


# Schema keywords that only annotate: a difference in them changes nothing about the call.
_ANNOTATIONS = frozenset({"description", "title", "examples", "$comment", "deprecated"})
_NAMED_SUBSCHEMAS = frozenset({"properties", "patternProperties", "$defs", "definitions", "dependentSchemas"})


def _shape(schema: Any) -> Any:
    """A schema without its annotations (descriptions, titles, examples)."""
    if isinstance(schema, list):
        return [_shape(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    shaped = {}
    for key, value in schema.items():
        if key in _ANNOTATIONS and isinstance(value, str | list | bool):
            continue
        if key in _NAMED_SUBSCHEMAS and isinstance(value, dict):
            shaped[key] = {name: _shape(sub) for name, sub in value.items()}
        else:
            shaped[key] = _shape(value)
    return shaped


def definition_differences(tool: ToolSpec, description: str, parameters: dict[str, Any] | None) -> list[str]:
    """How an agent's definition of ``tool`` differs from the one ops registered, in words for the
    reviewer. What ops left empty (a description, the parameters) is not compared, nor parameters
    the caller does not have (None)."""
    differences = []
    if tool.description.strip() and normalized_text(description) != normalized_text(tool.description):
        differences.append(
            f"description: the agent sent {description[:300]!r}; ops registered {tool.description[:300]!r}"
        )
    if tool.parameters and parameters is not None:
        ours, theirs = _shape(tool.parameters), _shape(parameters)
        if ours != theirs:
            differences.append("parameters: " + _parameter_changes(ours, theirs))
    return differences


def _parameter_changes(ours: dict[str, Any], theirs: dict[str, Any]) -> str:
    mine, sent = ours.get("properties") or {}, theirs.get("properties") or {}
    changes = [f"adds {name!r}" for name in sent if name not in mine]
    changes += [f"drops {name!r}" for name in mine if name not in sent]
    changes += [f"changes {name!r}" for name in mine if name in sent and mine[name] != sent[name]]
    if set(ours.get("required") or []) != set(theirs.get("required") or []):
        changes.append(
            f"requires {sorted(theirs.get('required') or [])} instead of {sorted(ours.get('required') or [])}"
        )
    rest = {
        key
        for key in set(ours) | set(theirs)
        if key not in ("properties", "required") and ours.get(key) != theirs.get(key)
    }
    changes += [f"changes {key!r}" for key in sorted(rest)]
    return ", ".join(changes) or "they differ"


def policy_matches(policy: RiskPolicy, call: CallContext, tags: set[str], pii_kinds: list[str]) -> str | None:
    """Why ``policy`` matches ``call``, or None if it does not."""
    matched, why = policy_verdict(policy, call, tags, pii_kinds)
    return why if matched else None


def policy_verdict(
    policy: RiskPolicy, call: CallContext, tags: set[str], pii_kinds: list[str]
) -> tuple[bool, str]:
    """Whether ``policy`` matches ``call``, and why: every part that matched, or the first that did not."""
    if not fnmatch.fnmatchcase(call.name, policy.tool_pattern or "*"):
        return False, f"tool {call.name!r} does not match {policy.tool_pattern!r}"
    why = [f"tool {call.name!r} matches {policy.tool_pattern or '*'!r}"]
    if policy.match_tags:
        shared = set(policy.match_tags) & tags
        if not shared:
            has = ", ".join(sorted(tags)) or "none"
            return False, f"the tool has none of the tags {', '.join(policy.match_tags)} (it has: {has})"
        why.append(f"tags {', '.join(sorted(shared))}")
    if policy.condition:
        if not evaluate_condition(policy.condition, call.arguments):
            return False, f"condition {policy.condition!r} is false for these arguments"
        why.append(f"condition {policy.condition!r} holds")
    if policy.min_uncertainty is not None:
        if call.uncertainty is None or call.uncertainty <= policy.min_uncertainty:
            shown = "unknown" if call.uncertainty is None else f"{call.uncertainty:.3f}"
            return False, f"uncertainty {shown} is not above {policy.min_uncertainty}"
        why.append(f"uncertainty {call.uncertainty:.3f} > {policy.min_uncertainty}")
    if policy.model_tier:
        if call.tier != policy.model_tier:
            return False, f"proposed by the {call.tier} tier, not the {policy.model_tier} tier"
        why.append(f"proposed by the {call.tier} tier")
    if policy.match_pii:
        if not pii_kinds:
            return False, "no PII in the arguments"
        why.append(f"PII in the arguments ({', '.join(sorted(set(pii_kinds)))})")
    return True, "; ".join(why)


def is_bounded_release(policy: RiskPolicy, tags: set[str]) -> bool:
    """An auto policy may release a risky call only if it is about that risk and limited by a condition."""
    risky = tags & RISKY_TAGS
    if not risky:
        return True
    names_it = "*" not in policy.tool_pattern and "?" not in policy.tool_pattern
    about_the_risk = bool(set(policy.match_tags) & risky)
    return bool(policy.condition) and (names_it or about_the_risk)


def decide_call(
    call: CallContext, *, policies: list[RiskPolicy], tools: dict[str, ToolSpec]
) -> PolicyDecision:
    """The decision for one tool call."""
    pii = call.pii()
    pii_kinds = [finding.kind for finding in pii]
    tool = tools.get(call.name)
    sent = call.agent_description is not None
    differences = (
        definition_differences(tool, call.agent_description or "", call.agent_parameters)
        if tool and sent
        else []
    )
    # Ops tagged a registered tool having read its definition: the agent's copy of that same
    # definition reveals nothing new. Any other wording is read for risks ops did not tag.
    pinned = tool is not None and bool(tool.description.strip())
    inferred = set() if pinned and not differences else description_tags(call.agent_description or "")
    if tool is None:
        return PolicyDecision(
            RiskPolicy.Decision.HUMAN,
            f"{call.name!r} is not a tool ops have registered; it may have side effects",
            risk_tags=sorted(inferred),
            pii=pii,
        )
    tags = set(tool.risk_tags or []) | inferred
    added = inferred - set(tool.risk_tags or [])
    for policy in policies:
        why = policy_matches(policy, call, tags, pii_kinds)
        if why is None:
            continue
        reason = f"policy {policy.name!r} matched: {why}"
        if added:
            reason += f" (the agent's description adds {', '.join(sorted(added))})"
        decision = policy.decision
        if decision == RiskPolicy.Decision.AUTO and not is_bounded_release(policy, tags):
            decision = RiskPolicy.Decision.HUMAN
            reason += (
                f"; held: {', '.join(sorted(tags & RISKY_TAGS))} actions are released automatically only by "
                "a policy that names the tool or tag and carries a condition"
            )
        return _held_if_redefined(
            PolicyDecision(decision, reason, policy, sorted(tags), pii), call, differences
        )
    unmatched = PolicyDecision(
        RiskPolicy.Decision.HUMAN,
        f"no policy matched {call.name!r}; held by default",
        None,
        sorted(tags),
        pii,
    )
    return _held_if_redefined(unmatched, call, differences)


def _held_if_redefined(decision: PolicyDecision, call: CallContext, differences: list[str]) -> PolicyDecision:
    """A call whose tool the agent defined otherwise than ops goes to a human (or stays blocked),
    and the reason says how the definitions differ."""
    decision.definition_differences = differences
    if not differences:
        return decision
    if _STRICTNESS[RiskPolicy.Decision(decision.decision)] < _STRICTNESS[RiskPolicy.Decision.HUMAN]:
        decision.decision = RiskPolicy.Decision.HUMAN
    listed = "; ".join(differences)
    decision.reason += (
        f"; the agent's definition of {call.name!r} differs from the one ops registered ({listed})"
    )
    return decision


def decide_action(calls: list[CallContext], *, configuration: Configuration | None = None) -> PolicyDecision:
    """The decision for a proposed plan: the strictest decision among its calls.

    Under ``configuration``'s enabled policies and tools (by default, the current ones).
    """
    configuration = configuration or current_configuration()
    policies = list(configuration.risk_policies)
    tools = configuration.tools_named(call.name for call in calls)
    decisions = [decide_call(call, policies=policies, tools=tools) for call in calls]
    if not decisions:
        return PolicyDecision(RiskPolicy.Decision.HUMAN, "the proposal holds no action")
    strictest = max(decisions, key=lambda d: _STRICTNESS[RiskPolicy.Decision(d.decision)])
    strictest.risk_tags = sorted({tag for d in decisions for tag in d.risk_tags})
    strictest.pii = [finding for d in decisions for finding in d.pii]
    strictest.definition_differences = [text for d in decisions for text in d.definition_differences]
    return strictest


def decide_answer(
    action: dict[str, Any],
    tools: list[dict[str, Any]],
    *,
    uncertainty: float | None = None,
    tier: str = "",
    configuration: Configuration | None = None,
) -> PolicyDecision:
    """The decision for a validated answer of any type.

    Tool calls go through the risk policies; a reply, an extraction or a label changes nothing
    outside the conversation and is released (its PII is still recorded for the trail).
    """
    if action["type"] == "tool_calls":
        calls = calls_of(action, tools, uncertainty=uncertainty, tier=tier)
        return decide_action(calls, configuration=configuration)
    return PolicyDecision(
        RiskPolicy.Decision.AUTO,
        f"a {action['type']} answer has no side effects",
        pii=find_pii(action.get("data", action.get("content")), "$"),
    )


def after_adjudication(policy: RiskPolicy, verdict: str) -> str:
    """What the second model's ``verdict`` leads to under ``policy``: AUTO (release), BLOCK
    (deny) or HUMAN. Only the outcomes the policy chose release or deny; ``unsure`` (and any
    verdict the model could not give cleanly) always goes to a human."""
    if verdict == "approve" and policy.on_adjudicator_approve == RiskPolicy.AdjudicatorApprove.RELEASE:
        return RiskPolicy.Decision.AUTO
    if verdict == "reject" and policy.on_adjudicator_reject == RiskPolicy.AdjudicatorReject.DENY:
        return RiskPolicy.Decision.BLOCK
    return RiskPolicy.Decision.HUMAN


def calls_of(
    action: dict[str, Any], tools: list[dict[str, Any]], *, uncertainty: float | None = None, tier: str = ""
) -> list[CallContext]:
    """The policy inputs for each call of a tool_calls action."""
    definitions = {tool["function"]["name"]: tool["function"] for tool in tools}
    return [
        CallContext(
            name=call["name"],
            arguments=call.get("arguments") or {},
            uncertainty=uncertainty,
            tier=tier,
            agent_description=definitions[call["name"]].get("description", "")
            if call["name"] in definitions
            else None,
            agent_parameters=definitions.get(call["name"], {}).get("parameters"),
            path=f"$.tool_calls[{index}].arguments",
        )
        for index, call in enumerate(action.get("tool_calls", []))
    ]


def preview_policies(text: str, *, uncertainty: float | None = None, tier: str = Tier.SLM) -> dict[str, Any]:
    """For the admin preview: the decision on a pasted action, and each policy's verdict on each call."""
    try:
        value = untrusted.loads(text, "the action")
    except untrusted.UntrustedInputError as exc:
        raise ApplicationError("invalid_preview", exc.message) from None
    if isinstance(value, dict) and "tool_calls" in value:
        value = value["tool_calls"]
    calls = value if isinstance(value, list) else [value]
    if not all(isinstance(call, dict) and isinstance(call.get("name"), str) for call in calls):
        raise ApplicationError("invalid_preview", 'each call needs a "name" and "arguments"')
    contexts = [
        CallContext(
            name=call["name"], arguments=call.get("arguments") or {}, uncertainty=uncertainty, tier=tier
        )
        for call in calls
    ]
    configuration = current_configuration()
    tools = configuration.tools_named(c.name for c in contexts)
    rows = []
    for call in contexts:
        tool = tools.get(call.name)
        tags = set(tool.risk_tags or []) if tool else set()
        pii_kinds = [finding.kind for finding in call.pii()]
        for policy in configuration.risk_policies:
            matched, why = policy_verdict(policy, call, tags, pii_kinds)
            rows.append({"call": call.name, "policy": policy, "matches": matched, "why": why})
    return {"decision": decide_action(contexts, configuration=configuration), "rows": rows}
