"""Write a realistic FOCUS 1.2 cost and usage CSV of N rows, streaming.

All 57 FOCUS 1.2 columns in their specification names, plus two `x_` provider columns.
One billing month (October 2026) of hourly usage lines: a fixed fleet of resources
(AWS-, Azure- and GCP-like: GPU instances, managed training and inference, model APIs,
storage, network) each bills one line per hour, spread over several billing accounts
and sub-accounts, tagged with project / team / training_run across 50 projects (a few
resources are untagged, as in life). Costs carry 10 or 11 decimal places.

The fleet is sized so that N rows cover the whole month (N / 744 resources), rows are
written hour by hour, and memory stays constant whatever N is.

`--restate` writes the same lines for the same billing period with every amount
changed slightly (a provider restating the month): same seed, same rows, new amounts.

`--organisation N` gives the billing accounts other ids (and so the invoices and
sub-accounts), for a file that imports as a source of its own beside organisation 0's:
an import refuses a billing account and period that another source holds. With another
`--seed`, the resources differ too.

    python bench/generate_focus.py --rows 1000000 --output /tmp/focus-1m.csv
    python bench/generate_focus.py --rows 1000000 --restate --output /tmp/focus-1m-r.csv
"""

import argparse
import csv
import json
import math
import random
import sys
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

# FOCUS 1.2: every column of the specification, in its own order (alphabetical).
FOCUS_12_COLUMNS = (
    "AvailabilityZone",
    "BilledCost",
    "BillingAccountId",
    "BillingAccountName",
    "BillingAccountType",
    "BillingCurrency",
    "BillingPeriodEnd",
    "BillingPeriodStart",
    "CapacityReservationId",
    "CapacityReservationStatus",
    "ChargeCategory",
    "ChargeClass",
    "ChargeDescription",
    "ChargeFrequency",
    "ChargePeriodEnd",
    "ChargePeriodStart",
    "CommitmentDiscountCategory",
    "CommitmentDiscountId",
    "CommitmentDiscountName",
    "CommitmentDiscountQuantity",
    "CommitmentDiscountStatus",
    "CommitmentDiscountType",
    "CommitmentDiscountUnit",
    "ConsumedQuantity",
    "ConsumedUnit",
    "ContractedCost",
    "ContractedUnitPrice",
    "EffectiveCost",
    "InvoiceId",
    "InvoiceIssuerName",
    "ListCost",
    "ListUnitPrice",
    "PricingCategory",
    "PricingCurrency",
    "PricingCurrencyContractedUnitPrice",
    "PricingCurrencyEffectiveCost",
    "PricingCurrencyListUnitPrice",
    "PricingQuantity",
    "PricingUnit",
    "ProviderName",
    "PublisherName",
    "RegionId",
    "RegionName",
    "ResourceId",
    "ResourceName",
    "ResourceType",
    "ServiceCategory",
    "ServiceName",
    "ServiceSubcategory",
    "SkuId",
    "SkuMeter",
    "SkuPriceDetails",
    "SkuPriceId",
    "SubAccountId",
    "SubAccountName",
    "SubAccountType",
    "Tags",
)
assert len(FOCUS_12_COLUMNS) == 57
EXTRA_COLUMNS = ("x_UsageType", "x_Operation")
HEADER = FOCUS_12_COLUMNS + EXTRA_COLUMNS

BILLING_START = datetime(2026, 10, 1, tzinfo=UTC)
BILLING_END = datetime(2026, 11, 1, tzinfo=UTC)
HOURS = int((BILLING_END - BILLING_START).total_seconds() // 3600)  # 744
PROJECTS = 50
TEAMS = 8
RUNS_PER_PROJECT = 4


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Service:
    provider: str
    name: str
    category: str
    subcategory: str
    resource_type: str
    sku: str
    meter: str
    unit: str  # ConsumedUnit and PricingUnit
    unit_price: float  # list price per unit
    quantity: tuple[float, float]  # per hour, low and high
    details: dict
    usage_type: str
    operation: str
    gpu: bool = False


SERVICES = (
    Service(
        "AWS",
        "Amazon Elastic Compute Cloud",
        "Compute",
        "Virtual Machines",
        "Instance",
        "p5.48xlarge",
        "Compute Usage",
        "GPU-Hours",
        12.29,
        (8, 8),
        {"InstanceType": "p5.48xlarge", "GpuCount": 8, "Gpu": "H100"},
        "BoxUsage:p5.48xlarge",
        "RunInstances",
        gpu=True,
    ),
    Service(
        "AWS",
        "Amazon Elastic Compute Cloud",
        "Compute",
        "Virtual Machines",
        "Instance",
        "g6e.12xlarge",
        "Compute Usage",
        "Hours",
        10.49,
        (1, 1),
        {"InstanceType": "g6e.12xlarge", "GpuCount": 4, "Gpu": "L40S"},
        "BoxUsage:g6e.12xlarge",
        "RunInstances",
    ),
    Service(
        "AWS",
        "Amazon SageMaker",
        "AI and Machine Learning",
        "Machine Learning",
        "Training Job",
        "ml.p4d.24xlarge",
        "Training",
        "GPU-Hours",
        4.10,
        (2, 8),
        {"InstanceType": "ml.p4d.24xlarge", "Gpu": "A100"},
        "Train:ml.p4d.24xlarge",
        "CreateTrainingJob",
        gpu=True,
    ),
    Service(
        "AWS",
        "Amazon Bedrock",
        "AI and Machine Learning",
        "Generative AI",
        "Model",
        "claude-sonnet-input",
        "Input Tokens",
        "1K Tokens",
        0.003,
        (50, 5000),
        {"Model": "anthropic.claude-sonnet", "Direction": "input"},
        "USE1-InputTokenCount",
        "InvokeModel",
    ),
    Service(
        "AWS",
        "Amazon Simple Storage Service",
        "Storage",
        "Object Storage",
        "Bucket",
        "TimedStorage-ByteHrs",
        "Storage",
        "GB-Hours",
        0.0000315,
        (20000, 400000),
        {"StorageClass": "Standard"},
        "TimedStorage-ByteHrs",
        "StandardStorage",
    ),
    Service(
        "AWS",
        "Amazon FSx",
        "Storage",
        "File Storage",
        "File System",
        "Lustre-PersistentSSD",
        "Storage",
        "GB-Hours",
        0.000198,
        (12000, 48000),
        {"DeploymentType": "PERSISTENT_2"},
        "Lustre-Storage",
        "CreateFileSystem",
    ),
    Service(
        "Microsoft",
        "Virtual Machines",
        "Compute",
        "Virtual Machines",
        "Virtual machine",
        "DZH318Z0BQPS",
        "NC H100 v5",
        "GPU-Hours",
        6.98,
        (1, 2),
        {"ArmSkuName": "Standard_NC40ads_H100_v5"},
        "NCads H100 v5",
        "Microsoft.Compute/virtualMachines",
        gpu=True,
    ),
    Service(
        "Microsoft",
        "Azure OpenAI Service",
        "AI and Machine Learning",
        "Generative AI",
        "Cognitive Services account",
        "DZH318Z0BQ4V",
        "gpt-4o Input Tokens",
        "1K Tokens",
        0.0025,
        (100, 9000),
        {"Model": "gpt-4o", "Direction": "input"},
        "gpt-4o-inp-glbl",
        "Microsoft.CognitiveServices/accounts",
    ),
    Service(
        "Microsoft",
        "Storage",
        "Storage",
        "Object Storage",
        "Storage account",
        "DZH318Z0BNVX",
        "Hot LRS Data Stored",
        "GB-Hours",
        0.0000257,
        (5000, 200000),
        {"Tier": "Hot", "Redundancy": "LRS"},
        "Hot LRS Data Stored",
        "Microsoft.Storage/storageAccounts",
    ),
    Service(
        "Google",
        "Compute Engine",
        "Compute",
        "Virtual Machines",
        "Instance",
        "A3-HIGHGPU-8G",
        "Nvidia H100 80GB GPU",
        "GPU-Hours",
        11.06,
        (8, 8),
        {"MachineType": "a3-highgpu-8g", "Gpu": "nvidia-h100-80gb"},
        "A3 Instance Core",
        "compute.instances.insert",
        gpu=True,
    ),
    Service(
        "Google",
        "Vertex AI",
        "AI and Machine Learning",
        "Machine Learning",
        "Custom Training Job",
        "1B6A-4C5C-8D39",
        "Custom Training TPU v5e",
        "Hours",
        1.20,
        (4, 32),
        {"Accelerator": "TPU v5e"},
        "Vertex AI Training",
        "aiplatform.customJobs.create",
    ),
    Service(
        "Google",
        "Cloud Storage",
        "Storage",
        "Object Storage",
        "Bucket",
        "E5F0-6A5B-1F2C",
        "Standard Storage",
        "GB-Hours",
        0.0000274,
        (10000, 300000),
        {"StorageClass": "STANDARD"},
        "Standard Storage US Multi-region",
        "storage.objects.create",
    ),
    Service(
        "Google",
        "Networking",
        "Networking",
        "Network Connectivity",
        "Network",
        "9DE9-9092-B3BC",
        "Egress Inter-region",
        "GB",
        0.02,
        (1, 400),
        {"Direction": "egress"},
        "Network Inter Region Egress",
        "networking.egress",
    ),
)

# provider: (issuer, billing accounts (id, name, type, currency), regions, zones)
PROVIDERS = {
    "AWS": {
        "issuer": "Amazon Web Services, Inc.",
        "accounts": [
            ("561044783021", "Acme AI Research", "Management Account", "USD"),
            ("729351004417", "Acme AI Production", "Management Account", "USD"),
        ],
        "sub_type": "Linked Account",
        "regions": [
            ("us-east-1", "US East (N. Virginia)"),
            ("us-west-2", "US West (Oregon)"),
            ("eu-west-1", "Europe (Ireland)"),
        ],
        "zones": "abc",
    },
    "Microsoft": {
        "issuer": "Microsoft",
        "accounts": [
            (
                "8611537|ce0b2d8f-30a4-5b9c-a1d7-2b5f1e6e9e30",
                "Acme EU Billing Profile",
                "Billing Profile",
                "EUR",
            ),
            (
                "8611537|1c9a77e0-4b62-5f3d-8ad6-5e2fd0d1a7c4",
                "Acme US Billing Profile",
                "Billing Profile",
                "USD",
            ),
        ],
        "sub_type": "Subscription",
        "regions": [
            ("westeurope", "West Europe"),
            ("eastus2", "East US 2"),
            ("swedencentral", "Sweden Central"),
        ],
        "zones": "123",
    },
    "Google": {
        "issuer": "Google",
        "accounts": [
            ("01A2B3-C4D5E6-F7A8B9", "Acme GCP Billing", "Billing Account", "USD"),
        ],
        "sub_type": "Project",
        "regions": [
            ("us-central1", "Iowa"),
            ("europe-west4", "Netherlands"),
            ("asia-southeast1", "Singapore"),
        ],
        "zones": "abc",
    },
}
SUB_ACCOUNTS_PER_BILLING_ACCOUNT = 6


@dataclass
class Resource:
    """Everything about a resource's line that does not change from hour to hour."""

    values: list[str]  # the static columns, in HEADER order, with slots for the rest
    service: Service
    decimals: int
    discount: float  # effective vs list
    contracted: float  # contracted vs list
    committed: bool


def _organisation_account(account_id: str, organisation: int) -> str:
    """The id of a billing account as another organisation has it: its last two
    characters are the organisation's number (organisation 0 keeps the ids)."""
    return account_id[:-2] + f"{organisation:02d}" if organisation else account_id


def _fleet(count: int, rng: random.Random, organisation: int = 0) -> list[Resource]:
    fleet = []
    for index in range(count):
        service = SERVICES[rng.randrange(len(SERVICES))]
        provider = PROVIDERS[service.provider]
        account_id, account_name, account_type, currency = rng.choice(
            provider["accounts"]
        )
        account_id = _organisation_account(account_id, organisation)
        sub = rng.randrange(SUB_ACCOUNTS_PER_BILLING_ACCOUNT)
        sub_id, sub_name = _sub_account(service.provider, account_id, sub)
        region_id, region_name = rng.choice(provider["regions"])
        zone = (
            f"{region_id}-{rng.choice(provider['zones'])}"
            if service.category == "Compute"
            else ""
        )
        resource_id, resource_name = _resource_id(
            service, account_id, sub_id, region_id, index
        )
        project = rng.randrange(PROJECTS)
        if rng.random() < 0.08:
            tags = {}  # untagged: lands in "unallocated"
        else:
            tags = {
                "project": f"proj-{project:03d}",
                "team": f"team-{project % TEAMS}",
                # runs 0-3 exist in the benchmark's seed; 4 and 5 do not
                "training_run": f"run-{project:03d}-{rng.randrange(6)}",
                "env": rng.choice(("prod", "research", "staging")),
                "cost-center": f"cc-{1000 + project % 12}",
            }
        committed = service.gpu and rng.random() < 0.5
        reserved = service.gpu and rng.random() < 0.3
        decimals = 11 if service.provider == "Microsoft" else 10
        price_id = f"{service.sku}-{region_id}-{'committed' if committed else 'od'}"
        row = dict.fromkeys(HEADER, "")
        row.update(
            AvailabilityZone=zone,
            BillingAccountId=account_id,
            BillingAccountName=account_name,
            BillingAccountType=account_type,
            BillingCurrency=currency,
            BillingPeriodEnd=iso(BILLING_END),
            BillingPeriodStart=iso(BILLING_START),
            CapacityReservationId=(
                f"cr-{rng.getrandbits(64):016x}" if reserved else ""
            ),
            CapacityReservationStatus="Used" if reserved else "",
            ChargeCategory="Usage",
            ChargeClass="",
            ChargeDescription=(
                f"{service.meter} {service.sku} in {region_name}, "
                f"{_price(service.unit_price)} {currency} per {service.unit}"
            ),
            ChargeFrequency="Usage-Based",
            CommitmentDiscountCategory="Spend" if committed else "",
            CommitmentDiscountId=(
                f"arn:aws:savingsplans::{account_id}:savingsplan/{index:08d}"
                if committed and service.provider == "AWS"
                else f"commitment-{account_id[-6:]}-{index % 7}"
                if committed
                else ""
            ),
            CommitmentDiscountName=(
                f"{service.provider} compute commitment {index % 7}"
                if committed
                else ""
            ),
            CommitmentDiscountStatus="Used" if committed else "",
            CommitmentDiscountType=("Compute Savings Plan" if committed else ""),
            CommitmentDiscountUnit=currency if committed else "",
            ConsumedUnit=service.unit,
            InvoiceId=f"INV-{account_id[-6:]}-202610",
            InvoiceIssuerName=provider["issuer"],
            PricingCategory="Committed" if committed else "Standard",
            PricingCurrency=currency,
            PricingUnit=service.unit,
            ProviderName=service.provider,
            PublisherName=(
                "Anthropic"
                if service.name == "Amazon Bedrock"
                else "OpenAI"
                if service.name == "Azure OpenAI Service"
                else provider["issuer"]
            ),
            RegionId=region_id,
            RegionName=region_name,
            ResourceId=resource_id,
            ResourceName=resource_name,
            ResourceType=service.resource_type,
            ServiceCategory=service.category,
            ServiceName=service.name,
            ServiceSubcategory=service.subcategory,
            SkuId=service.sku,
            SkuMeter=service.meter,
            SkuPriceDetails=json.dumps(service.details, separators=(",", ":")),
            SkuPriceId=price_id,
            SubAccountId=sub_id,
            SubAccountName=sub_name,
            SubAccountType=provider["sub_type"],
            Tags=json.dumps(tags, separators=(",", ":")) if tags else "",
            x_UsageType=service.usage_type,
            x_Operation=service.operation,
        )
        fleet.append(
            Resource(
                values=[row[column] for column in HEADER],
                service=service,
                decimals=decimals,
                discount=(0.62 if committed else 1.0) * rng.uniform(0.9, 1.0),
                contracted=rng.uniform(0.85, 1.0),
                committed=committed,
            )
        )
    return fleet


def _price(amount: float) -> str:
    return f"{amount:.8f}".rstrip("0").rstrip(".")


def _sub_account(provider: str, account_id: str, sub: int) -> tuple[str, str]:
    names = ("research", "training", "inference", "data", "evals", "platform")
    if provider == "AWS":
        return (
            f"{int(account_id[:6]) * 1000 + 317 + sub * 11:012d}",
            f"acme-{names[sub]}",
        )
    if provider == "Microsoft":
        guid = f"{sub:08x}-7d2e-4c51-9f3a-{account_id[-12:]}"
        return f"/subscriptions/{guid}", f"acme-{names[sub]}-sub"
    return f"acme-{names[sub]}-{sub * 7919 % 100000:05d}", f"acme-{names[sub]}"


def _resource_id(
    service: Service, account_id: str, sub_id: str, region: str, index: int
) -> tuple[str, str]:
    name = f"{service.sku.lower().replace('.', '-')}-{index:06d}"
    if service.provider == "AWS":
        kind = service.resource_type.lower().replace(" ", "-")
        return f"arn:aws:{kind}:{region}:{sub_id}:{kind}/{name}", name
    if service.provider == "Microsoft":
        return (
            f"{sub_id}/resourceGroups/rg-ml-{index % 40}/providers/"
            f"{service.operation}/{name}",
            name,
        )
    return f"//compute.googleapis.com/projects/{sub_id}/{name}", name


# Column positions of the values that change every hour.
_POS = {column: HEADER.index(column) for column in HEADER}


def write_focus(
    output,
    rows: int,
    *,
    seed: int = 20261126,
    restate: bool = False,
    organisation: int = 0,
) -> None:
    """Write `rows` data rows (plus the header) to the text stream `output`."""
    rng = random.Random(seed)
    fleet = _fleet(max(1, math.ceil(rows / HOURS)), rng, organisation)
    # Restated amounts: the same usage draws, then a second, independent stream of
    # small corrections, so the original file is unchanged by this option.
    restatement = random.Random(seed + 1) if restate else None
    writer = csv.writer(output, lineterminator="\n")
    writer.writerow(HEADER)
    pos = _POS
    written = 0
    for hour in range(HOURS):
        if written >= rows:
            break
        start = BILLING_START + timedelta(hours=hour)
        charge_start, charge_end = iso(start), iso(start + timedelta(hours=1))
        for resource in fleet:
            if written >= rows:
                break
            service = resource.service
            low, high = service.quantity
            quantity = low if low == high else rng.uniform(low, high)
            if service.gpu and rng.random() < 0.05:
                quantity *= rng.random()  # an instance stopped during the hour
            listed = quantity * service.unit_price
            contracted = listed * resource.contracted
            effective = listed * resource.discount
            if restatement is not None:
                effective *= 1 + restatement.uniform(-0.02, 0.02)
            billed = 0.0 if resource.committed else effective
            places = resource.decimals
            values = resource.values.copy()
            values[pos["ChargePeriodStart"]] = charge_start
            values[pos["ChargePeriodEnd"]] = charge_end
            values[pos["BilledCost"]] = f"{billed:.{places}f}"
            values[pos["EffectiveCost"]] = f"{effective:.{places}f}"
            values[pos["PricingCurrencyEffectiveCost"]] = f"{effective:.{places}f}"
            values[pos["ListCost"]] = f"{listed:.{places}f}"
            values[pos["ContractedCost"]] = f"{contracted:.{places}f}"
            values[pos["ListUnitPrice"]] = f"{service.unit_price:.{places}f}"
            values[pos["PricingCurrencyListUnitPrice"]] = values[pos["ListUnitPrice"]]
            unit_contracted = service.unit_price * resource.contracted
            values[pos["ContractedUnitPrice"]] = f"{unit_contracted:.{places}f}"
            values[pos["PricingCurrencyContractedUnitPrice"]] = values[
                pos["ContractedUnitPrice"]
            ]
            values[pos["ConsumedQuantity"]] = f"{quantity:.6f}"
            values[pos["PricingQuantity"]] = f"{quantity:.6f}"
            if resource.committed:
                values[pos["CommitmentDiscountQuantity"]] = f"{effective:.{places}f}"
            writer.writerow(values)
            written += 1
    if written < rows:  # more rows than the month holds for this fleet size: never
        raise AssertionError(f"wrote {written} of {rows} rows")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, required=True, help="data rows to write")
    parser.add_argument("--output", type=Path, help="file to write; stdout if absent")
    parser.add_argument("--seed", type=int, default=20261126)
    parser.add_argument(
        "--restate",
        action="store_true",
        help="same lines and billing period, slightly changed amounts",
    )
    parser.add_argument(
        "--organisation",
        type=int,
        default=0,
        choices=range(100),
        metavar="0-99",
        help="billing accounts of another organisation: a source of its own",
    )
    args = parser.parse_args(argv)
    options = {
        "seed": args.seed,
        "restate": args.restate,
        "organisation": args.organisation,
    }
    if args.output is None:
        write_focus(sys.stdout, args.rows, **options)
        return
    partial = args.output.with_name(args.output.name + ".partial")
    with partial.open("w", encoding="utf-8", newline="") as stream:
        write_focus(stream, args.rows, **options)
    partial.replace(args.output)


if __name__ == "__main__":
    main()
