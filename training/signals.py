"""The events training sends. Listeners live with the code that reacts (design.md, house style 11).

training never imports the apps that listen: mobile_api connects its receiver in its AppConfig.ready.
"""
from django.dispatch import Signal

#: Sent once per new ModelVersion, after the transaction that stored it committed, with
#: ``version=`` (the committed row; sender: ModelVersion). Trained and imported versions alike.
#: Receivers queue their own work; an exception in one is logged and never un-publishes.
version_published = Signal()
