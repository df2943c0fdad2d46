-- Argo CD health of a twinhull ModelSnapshot (serving.twinhull.io/v1alpha1, one recorded
-- revision of a ModelDeployment): Pending until verified, Good once Ready everywhere and
-- within targets, Bad when it was rolled back or failed.
-- Runs without Lua's standard libraries (as an argocd-cm customization does): no string.*.
local hs = {}
local outcome = nil
local message = ""
if obj.status ~= nil then
  outcome = obj.status.outcome
  message = obj.status.message or ""
  if message == "" and obj.status.reason ~= nil and obj.status.reason ~= "" then
    message = obj.status.reason
  end
end

if outcome == "Good" then
  hs.status = "Healthy"
elseif outcome == "Bad" then
  hs.status = "Degraded"
else
  hs.status = "Progressing"
  if message == "" then
    message = "being verified"
  end
end
hs.message = message
return hs
