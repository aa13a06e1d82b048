from django.contrib.auth.models import AbstractUser, BaseUserManager
from django.db import models
from django.urls import reverse


class UserManager(BaseUserManager):
    use_in_migrations = True

    def _create_user(self, email: str, password: str | None, **extra_fields):
        if not email:
            raise ValueError("An email address is required.")
        user = self.model(email=self.normalize_email(email).lower(), **extra_fields)
        user.set_password(password)
        user.save(using=self._db)
        return user

    def create_user(self, email: str, password: str | None = None, **extra_fields):
        extra_fields.setdefault("is_staff", False)
        extra_fields.setdefault("is_superuser", False)
        return self._create_user(email, password, **extra_fields)

    def create_superuser(self, email: str, password: str | None = None, **extra_fields):
        extra_fields.update(is_staff=True, is_superuser=True, role=User.Role.ADMIN)
        return self._create_user(email, password, **extra_fields)


class User(AbstractUser):
    """A person who logs in with an email address.

    The organisation-wide role sits here; the role inside a team is a Membership.
    """

    class Role(models.TextChoices):
        STANDARD = "standard", "Team user"
        FINANCE = "finance", "Finance"
        ADMIN = "admin", "Admin"

    class AlertDelivery(models.TextChoices):
        IMMEDIATE = "immediate", "Each alert as it fires"
        DIGEST = "digest", "One daily digest"
        OFF = "off", "No alert emails"

    username = None
    first_name = None
    last_name = None
    email = models.EmailField("email address", unique=True)
    full_name = models.CharField(max_length=150, blank=True)
    role = models.CharField(max_length=16, choices=Role, default=Role.STANDARD)
    alert_delivery = models.CharField(
        max_length=10,
        choices=AlertDelivery,
        default=AlertDelivery.IMMEDIATE,
        help_text="How this person hears about alerts on projects they look after.",
    )
    watched_teams = models.ManyToManyField(
        "Team",
        blank=True,
        related_name="watchers",
        help_text="Finance: the teams whose alerts this person receives.",
    )
    monthly_report_email = models.BooleanField(
        "Monthly report by email",
        default=True,
        help_text="Finance: the previous month's report (a summary, its PDF and a "
        "link) early each month.",
    )

    objects = UserManager()

    USERNAME_FIELD = "email"
    REQUIRED_FIELDS: list[str] = []

    class Meta:
        ordering = ["email"]

    def __str__(self) -> str:
        return self.full_name or self.email

    def save(self, *args, **kwargs):
        # The role is the one notion of "admin": Django's flags follow it both ways.
        self.is_staff = self.is_superuser = self.role == self.Role.ADMIN
        super().save(*args, **kwargs)

    def get_full_name(self) -> str:
        return self.full_name or self.email

    @property
    def display_name(self) -> str:
        """How others see this person where their address is not theirs to see."""
        return self.full_name or f"Unnamed user #{self.pk}"

    def get_short_name(self) -> str:
        return self.full_name.split(" ")[0] if self.full_name else self.email

    @property
    def is_admin(self) -> bool:
        return self.is_superuser or self.role == self.Role.ADMIN

    @property
    def is_finance(self) -> bool:
        return self.role == self.Role.FINANCE

    @property
    def sees_everything(self) -> bool:
        return self.is_admin or self.is_finance


class Team(models.Model):
    name = models.CharField(max_length=100, unique=True)
    slug = models.SlugField(max_length=100, unique=True)
    members = models.ManyToManyField(User, through="Membership", related_name="teams")
    # Chargeback: where the month's journal posts the team's spend.
    cost_centre = models.CharField(
        max_length=50,
        blank=True,
        help_text="Cost centre the team's spend is charged to in the monthly journal; "
        "empty if it has none yet.",
    )
    gl_account = models.CharField(
        "GL account",
        max_length=50,
        blank=True,
        help_text="General-ledger account of the team's spend in the monthly journal.",
    )

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def get_absolute_url(self) -> str:
        return reverse("team_detail", kwargs={"slug": self.slug})


class Membership(models.Model):
    class Role(models.TextChoices):
        LEAD = "lead", "Team lead"
        MEMBER = "member", "Member"

    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="memberships")
    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=8, choices=Role, default=Role.MEMBER)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["user", "team"], name="one_membership_per_team"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.user} in {self.team} ({self.get_role_display()})"


class Organisation(models.Model):
    """The one organisation a deployment serves, named by `manage.py bootstrap`;
    the portal shows its name. One row at most (its id is always 1)."""

    name = models.CharField(max_length=150)

    class Meta:
        constraints = [
            models.CheckConstraint(condition=models.Q(id=1), name="one_organisation")
        ]

    def __str__(self) -> str:
        return self.name
