"""URLs of verification: API under /api/v1/ (api_urlpatterns) and pages (urlpatterns)."""
from django.urls import path

from verification.api import (
    VerificationDecisionReverseApi,
    VerificationNextApi,
    VerificationPairsApi,
    VerificationVoteApi,
)
from verification.views import verify_image, verify_page, verify_vote

api_urlpatterns = [
    path("verification/next/", VerificationNextApi.as_view(), name="api-verification-next"),
    path("verification/<uuid:task_id>/vote/", VerificationVoteApi.as_view(), name="api-verification-vote"),
    path("verification/pairs/", VerificationPairsApi.as_view(), name="api-verification-pairs"),
    path("verification/decisions/<int:decision_id>/reverse/", VerificationDecisionReverseApi.as_view(),
         name="api-verification-reverse"),
]
urlpatterns = [
    path("verify/", verify_page, name="verify"),
    path("verify/<uuid:task_id>/", verify_vote, name="verify-vote"),
    path("verify/<uuid:task_id>/image", verify_image, name="verification-image"),
]
