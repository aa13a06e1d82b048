"""Allocation of cost lines to projects and runs by ordered rules: first match wins.

When no rule matches, one convention applies: a cost tagged `project=<project slug>`
goes to that project (and `training_run=<external id>` to that run). Invoices and
training scripts that name their project need no rule; anything else stays unallocated.
"""

from collections.abc import Mapping
from dataclasses import dataclass

from django.db.models import Q

from projects.models import AllocationRule, Project, TrainingRun


@dataclass(frozen=True)
class Allocation:
    project_id: int | None
    training_run_id: int | None


UNALLOCATED = Allocation(None, None)
PROJECT_TAG = "project"
# Besides tags, the column each kind of rule matches.
RULE_INPUTS = {
    AllocationRule.MatchOn.BILLING_ACCOUNT: "billing_account_id",
    AllocationRule.MatchOn.SUB_ACCOUNT: "sub_account_id",
    AllocationRule.MatchOn.RESOURCE_PREFIX: "resource_id",
    AllocationRule.MatchOn.SERVICE: "service_name",
}
INPUTS = tuple(RULE_INPUTS.values())
RUN_TAG = "training_run"


class Allocator:
    """Applies the active rules in order; built once per import, used for every row."""

    def __init__(self) -> None:
        self.rules = list(
            AllocationRule.objects.filter(is_active=True).order_by("priority", "id")
        )
        # The columns that decide an allocation, besides tags: those the rules match.
        matched = {RULE_INPUTS.get(rule.match_on) for rule in self.rules}
        self.inputs = tuple(name for name in INPUTS if name in matched)
        self.run_ids: dict[tuple[int, str], int] = {
            (project_id, external_id): run_id
            for run_id, project_id, external_id in TrainingRun.objects.values_list(
                "id", "project_id", "external_id"
            )
        }
        self.project_ids = dict(Project.objects.values_list("slug", "id"))
        self.known: dict[tuple, Allocation] = {}

    def allocate(self, record: Mapping) -> Allocation:
        """Rows of one export share few distinct allocation inputs: decide each once."""
        tags = record.get("tags") or {}
        try:
            key = (tuple(sorted(tags.items())), *(record.get(f) for f in INPUTS))
            return self.known[key]
        except KeyError:
            self.known[key] = allocation = self._decide(record, tags)
            return allocation
        except TypeError:  # a tag value that is not hashable (a list): decide afresh
            return self._decide(record, tags)

    def _decide(self, record: Mapping, tags: Mapping) -> Allocation:
        for rule in self.rules:
            if _rule_matches(rule, record, tags):
                return Allocation(rule.project_id, self._run_id(rule, tags))
        project_id = self.project_ids.get(str(tags.get(PROJECT_TAG, "")))
        if project_id is None:
            return UNALLOCATED
        return Allocation(
            project_id, self.run_ids.get((project_id, str(tags.get(RUN_TAG, ""))))
        )

    def _run_id(self, rule: AllocationRule, tags: Mapping) -> int | None:
        if rule.training_run_id:
            return rule.training_run_id
        if rule.run_tag_key and rule.run_tag_key in tags:
            return self.run_ids.get((rule.project_id, str(tags[rule.run_tag_key])))
        return None


def _rule_matches(rule: AllocationRule, record: Mapping, tags: Mapping) -> bool:
    match rule.match_on:
        case AllocationRule.MatchOn.TAG:
            return rule.tag_key in tags and str(tags[rule.tag_key]) == rule.value
        case AllocationRule.MatchOn.BILLING_ACCOUNT:
            return record.get("billing_account_id") == rule.value
        case AllocationRule.MatchOn.SUB_ACCOUNT:
            return record.get("sub_account_id") == rule.value
        case AllocationRule.MatchOn.RESOURCE_PREFIX:
            return (record.get("resource_id") or "").startswith(rule.value)
        case AllocationRule.MatchOn.SERVICE:
            return record.get("service_name") == rule.value
    return False


def rule_candidates(rule: AllocationRule) -> Q:
    """Cost records the rule may match, as a filter: a superset the database narrows
    fast, which the allocator then decides exactly (a tag's value may not be text)."""
    match rule.match_on:
        case AllocationRule.MatchOn.TAG:
            return Q(tags__has_key=rule.tag_key)
        case AllocationRule.MatchOn.RESOURCE_PREFIX:
            return Q(resource_id__startswith=rule.value)
    return Q(**{RULE_INPUTS[AllocationRule.MatchOn(rule.match_on)]: rule.value})
