from django.urls import path

from api.conversation_views import ConversationCloseApi
from api.views import ChannelMessageCreateApi

urlpatterns = [
    path("v1/channels/<str:channelId>/messages", ChannelMessageCreateApi.as_view(), name="channel-message-create"),
    path("v1/conversations/<str:conversationId>/close", ConversationCloseApi.as_view(), name="conversation-close"),
]
