-- Argo CD health of a twinhull ServingCluster (serving.twinhull.io/v1alpha1, a member
-- cluster). Its phase is the probe's verdict with hysteresis: Healthy; Suspect (failing,
-- below the threshold) and Recovering (back, not yet trusted) are on their way; Down
-- fails. A kubeconfig Secret that gives no working client (CredentialsValid=False) is
-- Degraded whatever the phase: the previous client may still work, but not for long.
-- Runs without Lua's standard libraries (as an argocd-cm customization does): no string.*.
local hs = {}

if obj.status == nil or obj.status.phase == nil then
  hs.status = "Progressing"
  hs.message = "waiting for the first probe"
  return hs
end

if obj.status.conditions ~= nil then
  for _, c in ipairs(obj.status.conditions) do
    if c.type == "CredentialsValid" and c.status == "False" then
      hs.status = "Degraded"
      hs.message = c.message or c.reason or "the kubeconfig Secret is not usable"
      return hs
    end
  end
end

local phase = obj.status.phase
local message = obj.status.message
if message == nil or message == "" then
  message = "phase " .. phase
end
if phase == "Healthy" then
  hs.status = "Healthy"
elseif phase == "Down" then
  hs.status = "Degraded"
else
  hs.status = "Progressing" -- Suspect, Recovering
end
hs.message = message
return hs
