"""OpenAPI schema generation (drf-spectacular) tuned to the house style."""
from drf_spectacular.openapi import AutoSchema as SpectacularAutoSchema


class AutoSchema(SpectacularAutoSchema):
    """Names nested `Input`/`Output` serializers after their view (SignupApiInput, ...).

    Views declare their serializers inside the view class; without this every one of them
    would be a component called "Input" and the schema would silently merge them.
    """

    def get_serializer_name(self, serializer, direction):
        qualname = type(serializer).__qualname__
        if "." in qualname:
            return qualname.replace(".", "")
        return super().get_serializer_name(serializer, direction)
