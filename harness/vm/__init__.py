"""Step 4 of the flow: a libvirt domain from data, booted, reached and watched."""
