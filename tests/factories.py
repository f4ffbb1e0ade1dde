"""factory_boy factories for the platform's models."""
import datetime as dt

import factory
from django.contrib.auth import get_user_model

from challenges.models import Challenge, Label, Project


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()

    username = factory.Sequence(lambda n: f"volunteer{n}")
    email = factory.LazyAttribute(lambda user: f"{user.username}@example.org")
    password = factory.django.Password("correct horse battery staple")


class ProjectFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Project
        django_get_or_create = ("slug",)

    slug = factory.Sequence(lambda n: f"project-{n}")
    title = factory.LazyAttribute(lambda project: project.slug.replace("-", " ").title())


class LabelFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Label

    project = factory.SubFactory(ProjectFactory)
    name = factory.Sequence(lambda n: f"label-{n}")
    target_count = 30


class ChallengeFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Challenge

    project = factory.SubFactory(ProjectFactory)
    day = factory.LazyFunction(dt.date.today)
    title = "Photograph it somewhere unusual"
    instructions = "Odd angles welcome."
