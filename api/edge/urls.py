from django.urls import path

from api.edge.conversation_views import ConversationCloseApi
from api.edge.read_views import (
    ContactDetailApi,
    ContactListApi,
    ConversationDetailApi,
    ConversationListApi,
    ConversationMessagesApi,
    MessageDetailApi,
    UsageApi,
)
from api.edge.views import ChannelMessageCreateApi

urlpatterns = [
    path("v1/channels/<str:channelId>/messages", ChannelMessageCreateApi.as_view(), name="channel-message-create"),
    path("v1/conversations/<str:conversationId>/close", ConversationCloseApi.as_view(), name="conversation-close"),
    path("v1/contacts", ContactListApi.as_view(), name="contact-list"),
    path("v1/contacts/<str:contactId>", ContactDetailApi.as_view(), name="contact-detail"),
    path("v1/conversations", ConversationListApi.as_view(), name="conversation-list"),
    path("v1/conversations/<str:conversationId>", ConversationDetailApi.as_view(), name="conversation-detail"),
    path(
        "v1/conversations/<str:conversationId>/messages",
        ConversationMessagesApi.as_view(),
        name="conversation-messages",
    ),
    path("v1/messages/<str:messageId>", MessageDetailApi.as_view(), name="message-detail"),
    path("v1/usage", UsageApi.as_view(), name="usage"),
]
