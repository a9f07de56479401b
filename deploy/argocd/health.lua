-- Argo CD health check for penguinmails.io/TenantApiKey.
--
-- Install it under resource.customizations.health.penguinmails.io_TenantApiKey in argocd-cm
-- (deploy/argocd/argocd-cm.yaml carries this exact text). Argo CD runs it with gopher-lua
-- (Lua 5.1 semantics): `obj` is the live object, the script returns {status, message}.
--
--   Healthy      phase Active or Rotating, Ready=True, observed the current generation;
--                also phase Revoked once spec.revoked is true: the declared state is reached
--                (revocation is final and was asked for in Git).
--   Progressing  no status yet, phase Pending, or the operator has not observed the current
--                generation yet.
--   Degraded     phase Failed; phase Expired (the key stopped working by the clock, nobody
--                asked for it at that moment: someone must move spec.expiresAt or remove the
--                key); Active/Rotating with Ready not True (e.g. Vault unreachable).
local hs = {}

local function ready_condition(status)
  if status.conditions == nil then
    return nil
  end
  for _, condition in ipairs(status.conditions) do
    if condition.type == "Ready" then
      return condition
    end
  end
  return nil
end

local function observed_generation(status, ready)
  if ready ~= nil and ready.observedGeneration ~= nil then
    return ready.observedGeneration
  end
  return status.observedGeneration
end

local function message_of(status, ready, fallback)
  if ready ~= nil and ready.message ~= nil and ready.message ~= "" then
    return ready.message
  end
  if status.message ~= nil and status.message ~= "" then
    return status.message
  end
  return fallback
end

local status = obj.status
if status == nil or status.phase == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the pmkeys operator to issue the key"
  return hs
end

local ready = ready_condition(status)
local phase = status.phase
local generation = obj.metadata.generation
local observed = observed_generation(status, ready)

-- A spec change the operator has not acted on yet: whatever the phase says is about the old spec.
if generation ~= nil and (observed == nil or observed < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to apply generation " .. tostring(generation)
  if ready ~= nil and ready.status ~= "True" and ready.message ~= nil and ready.message ~= "" then
    hs.message = hs.message .. ": " .. ready.message
  end
  return hs
end

if phase == "Failed" then
  hs.status = "Degraded"
  hs.message = message_of(status, ready, "The operator refused this key")
  return hs
end

if phase == "Expired" then
  hs.status = "Degraded"
  hs.message = message_of(status, ready, "The key expired")
  return hs
end

if phase == "Pending" then
  hs.status = "Progressing"
  hs.message = message_of(status, ready, "The key is being issued")
  return hs
end

if phase == "Revoked" then
  hs.status = "Healthy"
  hs.message = message_of(status, ready, "The key is revoked")
  return hs
end

if phase == "Active" or phase == "Rotating" then
  if ready ~= nil and ready.status == "True" then
    hs.status = "Healthy"
    local text = "Key " .. tostring(status.keyId) .. " (" .. tostring(status.displayPrefix) .. ") is active"
    if phase == "Rotating" then
      text = text .. "; the previous key still works during its grace period"
    end
    hs.message = text
    return hs
  end
  hs.status = "Degraded"
  hs.message = message_of(status, ready, "The key is not ready")
  return hs
end

hs.status = "Unknown"
hs.message = "Unknown phase " .. tostring(phase)
return hs
