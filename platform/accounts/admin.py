from django.contrib import admin

from accounts.models import Profile


@admin.register(Profile)
class ProfileAdmin(admin.ModelAdmin):
    list_display = ["display_name", "user", "public_on_leaderboards", "newsletter_opt_in", "created_at"]
    list_filter = ["public_on_leaderboards", "newsletter_opt_in"]
    list_select_related = ["user"]
    search_fields = ["display_name", "user__username"]
    readonly_fields = ["user"]
