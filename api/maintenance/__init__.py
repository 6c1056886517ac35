"""What acts on stored data outside a message's flow: the periodic clean-up, a contact's erasure, closing
conversations, the demo's set-up. It imports neither the flow (api/flow/) nor the edge (api/edge/)."""
