from django.contrib import admin
from django.contrib.auth.admin import UserAdmin as BaseUserAdmin
from django.contrib.auth.forms import AdminUserCreationForm
from django.contrib.auth.forms import UserChangeForm as BaseUserChangeForm
from django.core.exceptions import ValidationError
from django.db.models import Count

from accounts.models import Membership, Team, User


class UserCreationForm(AdminUserCreationForm):
    """Create a user from an email address and a password (or none, for SSO)."""

    class Meta:
        model = User
        fields = ("email",)
        field_classes = {}

    def clean_email(self) -> str:
        # The same normalisation as UserManager, so admin-made users log in alike.
        email = User.objects.normalize_email(self.cleaned_data["email"]).lower()
        if User.objects.filter(email__iexact=email).exists():
            raise ValidationError("A user with this email address already exists.")
        return email


class UserChangeForm(BaseUserChangeForm):
    class Meta:
        model = User
        fields = ("email",)
        field_classes = {}

    def clean_email(self) -> str:
        email = User.objects.normalize_email(self.cleaned_data["email"]).lower()
        others = User.objects.exclude(pk=self.instance.pk)
        if others.filter(email__iexact=email).exists():
            raise ValidationError("A user with this email address already exists.")
        return email


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    fields = ("user", "team", "role")


class UserMembershipInline(MembershipInline):
    autocomplete_fields = ("team",)
    verbose_name = "team membership"
    verbose_name_plural = "team memberships"


class TeamMembershipInline(MembershipInline):
    autocomplete_fields = ("user",)
    verbose_name_plural = "members"


@admin.register(User)
class UserAdmin(BaseUserAdmin):
    form = UserChangeForm
    add_form = UserCreationForm

    fieldsets = (
        (None, {"fields": ("email", "password")}),
        (
            "Profile",
            {
                "fields": ("full_name", "role", "is_active"),
                "description": "The Admin role grants Django admin and every "
                "permission; other roles have no admin access.",
            },
        ),
        ("Alert emails", {"fields": ("alert_delivery", "watched_teams")}),
        ("Important dates", {"fields": ("last_login", "date_joined")}),
    )
    filter_horizontal = ("watched_teams",)
    add_fieldsets = (
        (
            None,
            {
                "classes": ("wide",),
                "fields": (
                    "email",
                    "full_name",
                    "role",
                    "usable_password",
                    "password1",
                    "password2",
                ),
            },
        ),
    )
    readonly_fields = ("last_login", "date_joined")
    list_display = (
        "email",
        "full_name",
        "role",
        "is_active",
        "last_login",
    )
    list_filter = ("role", "is_active")
    search_fields = ("email", "full_name")
    ordering = ("email",)
    inlines = (UserMembershipInline,)


@admin.register(Team)
class TeamAdmin(admin.ModelAdmin):
    list_display = ("name", "slug", "cost_centre", "gl_account", "member_count")
    search_fields = ("name", "slug", "cost_centre", "gl_account")
    fieldsets = (
        (None, {"fields": ("name", "slug")}),
        (
            "Chargeback",
            {
                "fields": ("cost_centre", "gl_account"),
                "description": "Where the monthly journal posts this team's spend. "
                "Spend of no project goes to CHARGEBACK_DEFAULT_COST_CENTRE.",
            },
        ),
    )
    ordering = ("name",)
    prepopulated_fields = {"slug": ("name",)}
    inlines = (TeamMembershipInline,)

    def get_queryset(self, request):
        return (
            super().get_queryset(request).annotate(_member_count=Count("memberships"))
        )

    @admin.display(description="members", ordering="_member_count")
    def member_count(self, obj: Team) -> int:
        return obj._member_count


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):
    list_display = ("user", "team", "role")
    list_filter = ("role", "team")
    search_fields = ("user__email", "user__full_name", "team__name")
    ordering = ("team__name", "user__email")
    autocomplete_fields = ("user", "team")
    list_select_related = ("user", "team")
